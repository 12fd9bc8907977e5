//! Scenarios that need no fault: every outcome of the saga, the REST contract, idempotency,
//! a re-published record, concurrency and tracing. They run side by side, each with its own
//! products and customers.

mod bounds;
mod edges;
mod forged;
mod kafka;
mod load;
mod outcomes;
mod rest;

use std::future::Future;
use std::pin::Pin;

use orderflow_e2e::{Stack, put_account, put_product, wait_for_catalog};
use serde_json::Value;

use crate::SteadyScenario;
use crate::otlp::Receiver;

type Ctx = (Stack, Receiver);
type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub const SCENARIOS: &[(&str, SteadyScenario)] = &[
    scenario!(outcomes::happy_path_completes_with_the_expected_timeline),
    scenario!(outcomes::declined_payment_cancels_the_order),
    scenario!(outcomes::out_of_stock_refunds_and_cancels),
    scenario!(outcomes::shipping_failure_releases_refunds_and_cancels),
    scenario!(outcomes::cancel_after_shipment_is_409),
    scenario!(rest::idempotency_key_replays_the_original_answer),
    scenario!(rest::idempotency_keys_are_each_customers_own),
    scenario!(rest::bad_input_gets_problem_json_naming_the_field),
    scenario!(bounds::every_documented_string_bound_is_checked),
    scenario!(bounds::path_identifiers_are_bounded_and_never_echoed),
    scenario!(rest::every_service_serves_openapi_health_and_lists),
    scenario!(rest::the_console_is_served_with_a_content_security_policy),
    scenario!(edges::a_write_based_on_a_stale_read_is_refused_with_412),
    scenario!(edges::concurrent_first_puts_of_an_account_all_succeed),
    scenario!(kafka::republished_event_has_no_second_effect),
    scenario!(forged::a_forged_schema_is_dead_lettered_unread),
    scenario!(forged::a_schema_borrowing_a_contract_s_name_is_dead_lettered_unread),
    scenario!(load::concurrent_orders_never_oversell_and_conserve_money),
    scenario!(load::one_trace_per_order_across_all_four_services),
];

pub(super) async fn seed(
    stack: &Stack,
    tag: &str,
    products: &[(i64, i32)],
    customers: &[i64],
) -> (Vec<String>, Vec<String>) {
    let product_ids: Vec<String> = (0..products.len()).map(|i| format!("{tag}-p{i}")).collect();
    let customer_ids: Vec<String> = (0..customers.len())
        .map(|i| format!("{tag}-c{i}"))
        .collect();
    for (id, (price, stock)) in product_ids.iter().zip(products) {
        put_product(stack, id, *price, *stock).await;
    }
    for (id, balance) in customer_ids.iter().zip(customers) {
        put_account(stack, id, *balance).await;
    }
    let ids: Vec<&str> = product_ids.iter().map(String::as_str).collect();
    wait_for_catalog(stack, &ids).await;
    (product_ids, customer_ids)
}

pub(super) fn event<'a>(order: &'a Value, event_type: &str) -> &'a Value {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {order:#}"))
}
