//! What the load generator asks for and what it gets: the intended outcome of each order, in
//! the proportions of the `--mix`, and the outcome an order's terminal event reports.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The outcome an order is placed to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A rich customer, products in stock, a destination that ships.
    Completed,
    /// A customer with no money.
    Declined,
    /// A product with no stock.
    OutOfStock,
    /// Cancelled by the customer right after placing (shipping may still win the race).
    Cancelled,
}

impl Intent {
    const ALL: [Intent; 4] = [
        Intent::Completed,
        Intent::Declined,
        Intent::OutOfStock,
        Intent::Cancelled,
    ];

    fn name(self) -> &'static str {
        match self {
            Intent::Completed => "completed",
            Intent::Declined => "declined",
            Intent::OutOfStock => "out-of-stock",
            Intent::Cancelled => "cancelled",
        }
    }
}

/// How an order ended, as its terminal event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Declined,
    OutOfStock,
    Cancelled,
    ShipmentFailed,
    /// Cancelled for a reason none of the above names (e.g. the saga deadline).
    CancelledOther,
}

impl Outcome {
    /// The outcome of an `OrderCancelled` with `reason` (order-service's wording).
    pub fn of_cancellation(reason: &str) -> Self {
        if reason.starts_with("payment declined") {
            Outcome::Declined
        } else if reason.starts_with("out of stock") {
            Outcome::OutOfStock
        } else if reason.starts_with("cancelled:") && !reason.contains("saga deadline") {
            Outcome::Cancelled
        } else if reason.starts_with("shipment failed") {
            Outcome::ShipmentFailed
        } else {
            Outcome::CancelledOther
        }
    }

    /// Whether an order placed for `intent` ending like this is what was asked for. A
    /// cancellation may lose the race with the shipment: completing is legitimate too.
    pub fn fulfils(self, intent: Intent) -> bool {
        matches!(
            (intent, self),
            (Intent::Completed, Outcome::Completed)
                | (Intent::Declined, Outcome::Declined)
                | (Intent::OutOfStock, Outcome::OutOfStock)
                | (Intent::Cancelled, Outcome::Cancelled | Outcome::Completed)
        )
    }
}

/// Percentages of each intent; they add up to 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Intent, u32)>,
}

impl FromStr for Mix {
    type Err = String;

    /// `completed=85,declined=5,out-of-stock=5,cancelled=5`
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, percent) = part
                .split_once('=')
                .ok_or_else(|| format!("{part}: expected OUTCOME=PERCENT"))?;
            let intent = Intent::ALL
                .into_iter()
                .find(|i| i.name() == name.trim())
                .ok_or_else(|| {
                    let known: Vec<_> = Intent::ALL.iter().map(|i| i.name()).collect();
                    format!("{name}: not one of {}", known.join(", "))
                })?;
            let percent: u32 = percent.trim().parse().map_err(|e| format!("{part}: {e}"))?;
            if weights.iter().any(|(i, _)| *i == intent) {
                return Err(format!("{name} is given twice"));
            }
            weights.push((intent, percent));
        }
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        if total != 100 {
            return Err(format!("the percentages add up to {total}, not 100"));
        }
        weights.retain(|(_, w)| *w > 0);
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(i, w)| format!("{}={w}", i.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// An endless sequence of intents in the mix's proportions, spread evenly (smooth
    /// weighted round robin): any 100 consecutive orders hold the exact percentages.
    pub fn schedule(&self) -> impl Iterator<Item = Intent> + use<> {
        let weights = self.weights.clone();
        let mut credit = vec![0i64; weights.len()];
        std::iter::repeat_with(move || {
            for (c, (_, w)) in credit.iter_mut().zip(&weights) {
                *c += i64::from(*w);
            }
            let (best, _) = credit
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("a mix has at least one intent");
            credit[best] -= 100;
            weights[best].0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_must_name_known_outcomes_that_add_up_to_a_hundred() {
        assert!(
            "completed=85,declined=5,out-of-stock=5,cancelled=5"
                .parse::<Mix>()
                .is_ok()
        );
        assert!("completed=100".parse::<Mix>().is_ok());
        assert!("completed=90".parse::<Mix>().unwrap_err().contains("90"));
        assert!(
            "shipped=100"
                .parse::<Mix>()
                .unwrap_err()
                .contains("shipped")
        );
        assert!("completed=50,completed=50".parse::<Mix>().is_err());
        assert!("completed".parse::<Mix>().is_err());
    }

    #[test]
    fn every_hundred_consecutive_orders_hold_the_exact_percentages() {
        let mix: Mix = "completed=85,declined=5,out-of-stock=5,cancelled=5"
            .parse()
            .unwrap();
        let intents: Vec<Intent> = mix.schedule().take(300).collect();
        for window in [&intents[0..100], &intents[100..200], &intents[37..137]] {
            let count = |i| window.iter().filter(|&&x| x == i).count();
            assert_eq!(count(Intent::Completed), 85);
            assert_eq!(count(Intent::Declined), 5);
            assert_eq!(count(Intent::OutOfStock), 5);
            assert_eq!(count(Intent::Cancelled), 5);
        }
    }

    #[test]
    fn a_cancellation_is_classified_by_order_services_reason() {
        let cases = [
            ("payment declined: insufficient funds", Outcome::Declined),
            ("out of stock: p1: 0 available", Outcome::OutOfStock),
            ("cancelled: changed my mind", Outcome::Cancelled),
            (
                "cancelled: the saga deadline (12:00:00.000 UTC) passed",
                Outcome::CancelledOther,
            ),
            (
                "shipment failed: no carrier ships to AQ",
                Outcome::ShipmentFailed,
            ),
        ];
        for (reason, outcome) in cases {
            assert_eq!(Outcome::of_cancellation(reason), outcome, "{reason}");
        }
    }

    #[test]
    fn a_cancellation_that_lost_the_race_to_the_shipment_still_fulfils_its_intent() {
        assert!(Outcome::Completed.fulfils(Intent::Cancelled));
        assert!(Outcome::Cancelled.fulfils(Intent::Cancelled));
        assert!(!Outcome::Cancelled.fulfils(Intent::Completed));
        assert!(!Outcome::CancelledOther.fulfils(Intent::Declined));
    }
}
