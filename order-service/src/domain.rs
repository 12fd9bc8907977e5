//! order-service's domain, free of I/O: the order's events, the aggregate folded from them,
//! and validation of new orders.

pub mod events;
pub mod order;
pub mod validation;

pub use events::{Line, OrderEvent, Placed, StepKind};
pub use order::{AwaitedStep, CancelRefused, OperatorRefused, Order, OrderStatus};
