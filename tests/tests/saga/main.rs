//! End-to-end tests of the order saga: the four services as real processes on the local
//! stack (`scripts/stack-up`), driven over HTTP only.
//!
//! Two stacks, each started on first use: `steady` (long saga deadline, exporting spans to
//! an OTLP receiver this test runs) for scenarios that run side by side, and `faults`
//! (short deadline) for scenarios that stop and restart services, run one at a time, with
//! those of operating stuck sagas (`operate`).

/// A scenario with its listed name, which is the path of the function it runs (e.g.
/// `saga::faults::cancel_after_payment_refunds`): a name cannot drift from its code.
macro_rules! scenario {
    ($first:ident $(:: $rest:ident)* $(, $extra:expr)?) => {
        (
            concat!(module_path!(), "::", stringify!($first) $(, "::", stringify!($rest))*),
            $first $(:: $rest)*
            $(, $extra)?
        )
    };
}

mod faults;
mod operate;
mod otlp;
mod steady;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};
use orderflow_e2e::Stack;
use tokio::runtime::Handle;
use tokio::sync::{Mutex, OnceCell};

/// A scenario on the steady stack (shared, read-only).
pub type SteadyScenario =
    for<'a> fn(&'a (Stack, otlp::Receiver)) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
/// A scenario on the faults stack (exclusive: it stops and starts services).
pub type FaultScenario = for<'a> fn(&'a mut Stack) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The stacks, started lazily so that listing or filtering tests starts nothing needless.
pub struct Stacks {
    steady: OnceCell<(Stack, otlp::Receiver)>,
    faults: OnceCell<Mutex<Stack>>,
}

impl Stacks {
    async fn steady(&self) -> &(Stack, otlp::Receiver) {
        self.steady
            .get_or_init(|| async {
                let receiver = otlp::Receiver::start().await;
                let stack = Stack::start(
                    "s",
                    &[
                        ("SAGA_DEADLINE_SECS", "180".to_owned()),
                        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint()),
                        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
                        ("OTEL_BSP_SCHEDULE_DELAY", "500".to_owned()),
                        // Quiet logs must not cost the traces (the tracing scenario runs here).
                        ("RUST_LOG", orderflow_e2e::env_or("TEST_RUST_LOG", "warn")),
                    ],
                )
                .await;
                (stack, receiver)
            })
            .await
    }

    async fn faults(&self) -> &Mutex<Stack> {
        self.faults
            .get_or_init(|| async {
                Mutex::new(
                    Stack::start(
                        "f",
                        &[
                            ("SAGA_DEADLINE_SECS", faults::NO_DEADLINE_SECS.to_string()),
                            ("STUCK_AFTER_SECS", operate::STUCK_AFTER_SECS.to_string()),
                        ],
                    )
                    .await,
                )
            })
            .await
    }
}

fn trial<F>(name: &str, runtime: &Handle, stacks: &Arc<Stacks>, run: F) -> Trial
where
    F: for<'a> Fn(&'a Stacks) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
        + Send
        + Sync
        + 'static,
{
    let runtime = runtime.clone();
    let stacks = stacks.clone();
    Trial::test(name, move || {
        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(run(&stacks)))).map_err(
            |panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                Failed::from(message)
            },
        )
    })
}

fn main() {
    let mut args = Arguments::from_args();
    // The steady scenarios mostly wait on the saga; let them wait side by side.
    args.test_threads.get_or_insert(8);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stacks = Arc::new(Stacks {
        steady: OnceCell::new(),
        faults: OnceCell::new(),
    });
    let handle = runtime.handle();
    let mut trials = Vec::new();
    for &(name, scenario) in steady::SCENARIOS {
        trials.push(trial(name, handle, &stacks, move |stacks| {
            Box::pin(async move { scenario(stacks.steady().await).await })
        }));
    }
    for &(name, scenario, deadline_secs) in faults::SCENARIOS.iter().chain(operate::SCENARIOS) {
        trials.push(trial(name, handle, &stacks, move |stacks| {
            Box::pin(async move {
                // One at a time: they stop and start the stack's services.
                let mut stack = stacks.faults().await.lock().await;
                stack.ensure_all_running().await;
                stack
                    .service("order-service")
                    .run_with("SAGA_DEADLINE_SECS", &deadline_secs.to_string())
                    .await;
                scenario(&mut stack).await;
            })
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials (and their handles on the stacks) are gone; stop the services cleanly so
    // their consumers leave their groups, and drop the stacks' databases.
    if let Ok(stacks) = Arc::try_unwrap(stacks) {
        runtime.block_on(async {
            if let Some((mut stack, _)) = stacks.steady.into_inner() {
                stack.stop_all().await;
            }
            if let Some(stack) = stacks.faults.into_inner() {
                stack.into_inner().stop_all().await;
            }
        });
    }
    conclusion.exit();
}
