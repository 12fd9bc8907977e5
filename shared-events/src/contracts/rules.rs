//! What the schemas cannot say: content no producer of ours writes, because it could never
//! be true (a negative quantity, an order total that is not the sum of its lines). A record
//! that decodes but breaks one is poison, dead-lettered as `invalid_event`, so that no
//! handler ever has to decide what a negative reservation would mean.

use super::{DeadLetterPosition, EventPayload, Money, OrderLine, StockLine, Topic};

impl EventPayload {
    /// Why this payload cannot be true, if it cannot.
    pub fn impossibility(&self) -> Option<String> {
        match self {
            EventPayload::OrderPlaced(placed) => order_lines(&placed.lines, &placed.total),
            EventPayload::OrderCompleted(completed) => not_negative("total", &completed.total),
            EventPayload::PaymentAuthorized(payment) => positive("amount", &payment.amount),
            EventPayload::PaymentRefunded(refund) => positive("amount", &refund.amount),
            EventPayload::StockReserved(reserved) => stock_lines(&reserved.lines),
            EventPayload::StockReleased(released) => stock_lines(&released.lines),
            EventPayload::ProductUpserted(product) => (product.available_quantity < 0)
                .then(|| "available_quantity is negative".to_owned())
                .or_else(|| positive("unit_price", &product.unit_price)),
            EventPayload::DeadLetterRedriveRequested(request) => {
                dead_letters(&request.dead_letters)
            }
            _ => None,
        }
    }
}

fn order_lines(lines: &[OrderLine], total: &Money) -> Option<String> {
    if lines.is_empty() {
        return Some("an order without lines".to_owned());
    }
    let mut sum: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.quantity < 1 {
            return Some(format!("lines[{i}].quantity is {}", line.quantity));
        }
        if line.unit_price.currency != total.currency {
            return Some(format!(
                "lines[{i}] is priced in another currency than the total"
            ));
        }
        if let Some(reason) = not_negative(&format!("lines[{i}].unit_price"), &line.unit_price) {
            return Some(reason);
        }
        let Some(next) = line
            .unit_price
            .amount_minor
            .checked_mul(i64::from(line.quantity))
            .and_then(|amount| amount.checked_add(sum))
        else {
            return Some("the lines add up to more than a total can hold".to_owned());
        };
        sum = next;
    }
    (sum != total.amount_minor).then(|| {
        format!(
            "total is {} but its lines add up to {sum}",
            total.amount_minor
        )
    })
}

fn dead_letters(positions: &[DeadLetterPosition]) -> Option<String> {
    if positions.is_empty() {
        return Some("a redrive of no dead letters".to_owned());
    }
    positions.iter().enumerate().find_map(|(i, position)| {
        if !Topic::ALL.iter().any(|t| t.base_name() == position.topic) {
            Some(format!(
                "dead_letters[{i}].topic {} is none of ours",
                position.topic
            ))
        } else if position.partition < 0 || position.offset < 0 {
            Some(format!(
                "dead_letters[{i}] has a negative partition or offset"
            ))
        } else {
            None
        }
    })
}

fn stock_lines(lines: &[StockLine]) -> Option<String> {
    lines
        .iter()
        .position(|line| line.quantity < 1)
        .map(|i| format!("lines[{i}].quantity is {}", lines[i].quantity))
}

fn positive(field: &str, money: &Money) -> Option<String> {
    (money.amount_minor <= 0).then(|| format!("{field} is {}", money.amount_minor))
}

fn not_negative(field: &str, money: &Money) -> Option<String> {
    (money.amount_minor < 0).then(|| format!("{field} is {}", money.amount_minor))
}
