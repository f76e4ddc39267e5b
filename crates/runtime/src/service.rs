//! The shape of a started service, shared by every tillstream service: [`Running`] (where its ops
//! endpoint listens, its health, `wait()`) and the [`ShutdownGuard`] that owns every task of the
//! service by name and stops them in stages. Owns no business data; gives no delivery guarantee of
//! its own: each stage finishes what it holds before the next stage is told to stop (e.g. the bridge
//! stops taking MQTT messages, then drains, then closes its outbox), which is what lets every service
//! commit what it finished on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Health;

/// A task of a service that ended when nobody asked it to, or panicked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task {task} {detail}")]
pub struct TaskFailure {
    pub task: &'static str,
    pub detail: String,
}

/// One stage of the staged shutdown: its tasks watch `token`, which is cancelled only after every
/// earlier stage's tasks have finished.
struct Stage<E> {
    name: &'static str,
    token: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<Result<(), E>>)>,
}

/// Owns every task of a service. Runs until the service's stop token is cancelled or any task ends
/// (a failure, or a component that gave up), then stops the stages in the order they were opened:
/// cancel the stage's token, await each of its tasks, then the next stage. The first error wins.
pub struct ShutdownGuard<E> {
    service: &'static str,
    stop: CancellationToken,
    stages: Vec<Stage<E>>,
}

impl<E> std::fmt::Debug for ShutdownGuard<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<(&str, Vec<&str>)> = self
            .stages
            .iter()
            .map(|s| (s.name, s.tasks.iter().map(|(n, _)| *n).collect()))
            .collect();
        f.debug_struct("ShutdownGuard")
            .field("service", &self.service)
            .field("stages", &stages)
            .finish()
    }
}

impl<E> ShutdownGuard<E>
where
    E: From<TaskFailure> + std::fmt::Display + Send + 'static,
{
    /// `stop` is the service's stop signal (SIGTERM via `shutdown::signal_token`, or a test's token).
    pub fn new(service: &'static str, stop: CancellationToken) -> Self {
        ShutdownGuard {
            service,
            stop,
            stages: Vec::new(),
        }
    }

    /// The service's stop signal.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Opens the next stage and returns the token its tasks must watch. The first stage's token is
    /// also cancelled by the stop signal itself, so intake stops at once on SIGTERM.
    pub fn stage(&mut self, name: &'static str) -> CancellationToken {
        let token = if self.stages.is_empty() {
            self.stop.child_token()
        } else {
            CancellationToken::new()
        };
        self.stages.push(Stage {
            name,
            token: token.clone(),
            tasks: Vec::new(),
        });
        token
    }

    /// Spawns `task` into the newest stage (a stage named after the task is opened if none is).
    pub fn spawn_task<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        if self.stages.is_empty() {
            self.stage(name);
        }
        let handle = tokio::spawn(task);
        self.stages
            .last_mut()
            .expect("a stage exists")
            .tasks
            .push((name, handle));
    }

    /// Runs until stopped or until any task ends, then stops stage by stage.
    pub async fn run(mut self) -> Result<(), E> {
        let service = self.service;
        let mut first_error: Option<E> = None;
        // Phase 1: wait for the stop signal or for the first task to end.
        let ended = {
            let mut watch: futures::stream::FuturesUnordered<_> = self
                .stages
                .iter_mut()
                .enumerate()
                .flat_map(|(s, stage)| {
                    stage
                        .tasks
                        .iter_mut()
                        .enumerate()
                        .map(move |(t, (_, h))| async move { (s, t, h.await) })
                })
                .collect();
            use futures::StreamExt;
            tokio::select! {
                _ = self.stop.cancelled() => None,
                Some(done) = watch.next() => Some(done),
            }
        };
        if let Some((s, t, result)) = ended {
            let (name, _) = self.stages[s].tasks.remove(t);
            match joined(name, result) {
                Some(e) => {
                    tracing::error!(service, task = name, error = %e, "task failed: stopping the service");
                    first_error = Some(e);
                }
                None if !self.stop.is_cancelled() => {
                    let e = E::from(TaskFailure {
                        task: name,
                        detail: "stopped unexpectedly".into(),
                    });
                    tracing::error!(service, task = name, "task ended: stopping the service");
                    first_error = Some(e);
                }
                None => {}
            }
        }
        // Phase 2: stop the stages in order.
        for stage in self.stages {
            stage.token.cancel();
            for (name, handle) in stage.tasks {
                if let Some(e) = joined(name, handle.await) {
                    tracing::error!(service, stage = stage.name, task = name, error = %e, "task failed while stopping");
                    first_error.get_or_insert(e);
                }
            }
            tracing::debug!(service, stage = stage.name, "stage stopped");
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn joined<E: From<TaskFailure>>(
    name: &'static str,
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> Option<E> {
    match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(E::from(TaskFailure {
            task: name,
            detail: format!("panicked or was aborted: {e}"),
        })),
    }
}

/// A started service: where its ops endpoint listens, its health, and the guard that runs it.
/// `S` is what a caller may observe of the running service besides that (e.g. the dedup's
/// per-instance counters, read by tests that run several instances in one process); `()` for most.
#[derive(Debug)]
pub struct Running<E, S = ()> {
    /// Where `/metrics`, `/healthz` and `/readyz` listen (config port 0 = a free port).
    pub ops_addr: SocketAddr,
    /// Readiness and liveness of the service's components.
    pub health: Health,
    /// Service-specific observation handles (see the type's doc).
    pub state: S,
    done: JoinHandle<Result<(), E>>,
}

impl<E, S> Running<E, S>
where
    E: From<TaskFailure> + std::fmt::Display + Send + 'static,
{
    /// Starts running `guard` (its tasks already run; this watches them and stops them in order).
    pub fn new(ops_addr: SocketAddr, health: Health, state: S, guard: ShutdownGuard<E>) -> Self {
        Running {
            ops_addr,
            health,
            state,
            done: tokio::spawn(guard.run()),
        }
    }

    /// True once the service has stopped (a task failed, or the stop token was cancelled and the
    /// stages have run down); lets a caller that waits for progress fail at once instead of at its
    /// deadline.
    pub fn is_stopped(&self) -> bool {
        self.done.is_finished()
    }

    /// Waits until the service has stopped (after its stop token was cancelled, or a task failed).
    pub async fn wait(self) -> Result<(), E> {
        match self.done.await {
            Ok(r) => r,
            Err(e) => Err(E::from(TaskFailure {
                task: "shutdown guard",
                detail: format!("panicked: {e}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("boom")]
        Boom,
        #[error(transparent)]
        Task(#[from] TaskFailure),
    }

    /// A task that records when it saw its token cancelled, then (optionally) fails.
    fn recorder(
        log: &Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
        token: CancellationToken,
        fail: bool,
    ) -> impl Future<Output = Result<(), TestError>> + Send + 'static {
        let log = log.clone();
        async move {
            token.cancelled().await;
            // Later stages must not have been told to stop yet: give them a chance to misbehave.
            tokio::time::sleep(Duration::from_millis(20)).await;
            log.lock().unwrap().push(name);
            if fail { Err(TestError::Boom) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn stages_stop_in_order_on_the_stop_signal() {
        let stop = CancellationToken::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut guard = ShutdownGuard::<TestError>::new("t", stop.clone());
        let intake = guard.stage("intake");
        guard.spawn_task("a", recorder(&log, "a", intake.clone(), false));
        guard.spawn_task("b", recorder(&log, "b", intake, false));
        let drain = guard.stage("drain");
        guard.spawn_task("c", recorder(&log, "c", drain, false));
        let store = guard.stage("store");
        guard.spawn_task("d", recorder(&log, "d", store, false));
        let run = tokio::spawn(guard.run());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "nothing stops before the signal"
        );
        stop.cancel();
        run.await.unwrap().unwrap();
        let got = log.lock().unwrap().clone();
        assert_eq!(&got[2..], &["c", "d"], "{got:?}");
        assert!(
            got[..2].contains(&"a") && got[..2].contains(&"b"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_rest_and_its_error_wins() {
        let stop = CancellationToken::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut guard = ShutdownGuard::<TestError>::new("t", stop.clone());
        let intake = guard.stage("intake");
        guard.spawn_task("failing", async { Err(TestError::Boom) });
        guard.spawn_task("a", recorder(&log, "a", intake, false));
        let drain = guard.stage("drain");
        guard.spawn_task("c", recorder(&log, "c", drain, true));
        let err = guard.run().await.unwrap_err();
        assert!(matches!(err, TestError::Boom), "{err}");
        assert_eq!(*log.lock().unwrap(), vec!["a", "c"]);
        assert!(
            !stop.is_cancelled(),
            "the guard never cancels its caller's token"
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_unasked_is_an_error_naming_it() {
        let stop = CancellationToken::new();
        let mut guard = ShutdownGuard::<TestError>::new("t", stop);
        let _ = guard.stage("only");
        guard.spawn_task("quitter", async { Ok(()) });
        let running = Running::new("127.0.0.1:1".parse().unwrap(), Health::new(), (), guard);
        let err = running.wait().await.unwrap_err();
        assert!(err.to_string().contains("quitter"), "{err}");
    }
}
