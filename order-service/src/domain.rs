//! order-service's domain, free of I/O: the order's events, the aggregate folded from them,
//! and the parts a new order is parsed into.

pub mod events;
pub mod new_order;
pub mod order;

pub use events::{Line, OrderEvent, Placed, StepKind};
pub use order::{AwaitedStep, CancelRefused, OperatorRefused, Order, OrderStatus};
