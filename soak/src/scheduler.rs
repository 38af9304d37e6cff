//! The warmer as EventBridge and Lambda run it: an invocation (`warmer --once`, a process of its
//! own) every period whether or not the last one ended, each SIGKILLed at its timeout with no
//! shutdown, never retried, and now and then two at once; past the function's reserved
//! concurrency an invocation is throttled (not run). At most one does the work: the others find
//! the warmer's lease held and end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{lock, signal};

/// The schedule and what its invocations did.
#[derive(Debug)]
pub struct Schedule {
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    /// Set on top of `env` for a share of the invocations (`other_share`): the warmer on another
    /// invalidation backend, as a stack's warmers would be after a change of its configuration.
    pub other_env: Vec<(String, String)>,
    pub other_share: f64,
    pub log: PathBuf,
    /// The schedule's period (EventBridge's rate).
    pub period: Duration,
    /// The function's timeout: an invocation still running then is SIGKILLed.
    pub timeout: Duration,
    /// The share of periods whose event starts two invocations at once (both run if the
    /// concurrency allows).
    pub overlap: f64,
    /// The function's reserved concurrency: most invocations at once (each holds up to two
    /// database connections).
    pub concurrency: usize,
    /// Invocations started and not ended yet (running, or starting).
    pub active: AtomicUsize,
    /// Invocations throttled: `concurrency` ran already.
    pub throttled: AtomicU64,
    /// Invocations running now.
    pub running: Mutex<Vec<u32>>,
    /// No invocation starts before this (a fault that takes the scheduler down for a while).
    pub paused_until: Mutex<Option<Instant>>,
    /// Every invocation's summary line.
    pub ticks: Arc<Mutex<Vec<Value>>>,
    /// When invocations were killed at their timeout, in seconds from the soak's epoch.
    pub timed_out: Mutex<Vec<f64>>,
    pub invocations: AtomicU64,
    /// Invocations with `other_env`.
    pub others: AtomicU64,
    pub overlapped: AtomicU64,
    /// Invocations killed by a fault.
    pub killed: AtomicU64,
}

impl Schedule {
    /// Invokes every period until `running` goes off.
    pub async fn run(self: Arc<Self>, running: Arc<AtomicBool>, epoch: Instant, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut next = Instant::now();
        while running.load(Ordering::Relaxed) {
            tokio::time::sleep_until(next.into()).await;
            next += self.period;
            if lock(&self.paused_until).is_some_and(|until| Instant::now() < until) {
                continue;
            }
            let count = if rng.f64() < self.overlap { 2 } else { 1 };
            let mut started = 0;
            for _ in 0..count {
                let other = rng.f64() < self.other_share;
                // Lambda throttles an invocation past the reserved concurrency. It would retry the
                // event within its maximum age (five minutes); the soak drops it (the next
                // period's comes), the harsher of the two.
                let Some(active) = Active::take(&self) else {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                started += 1;
                tokio::spawn(self.clone().invoke(epoch, other, active));
            }
            if started == 2 {
                self.overlapped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One invocation: started, its summary collected, killed at the timeout.
    async fn invoke(self: Arc<Self>, epoch: Instant, other: bool, _active: Active) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if other {
            self.others.fetch_add(1, Ordering::Relaxed);
        }
        let other_env = if other { self.other_env.as_slice() } else { &[] };
        let Ok(log) = std::fs::OpenOptions::new().create(true).append(true).open(&self.log) else { return };
        let child = tokio::process::Command::new(&self.binary)
            .arg("--once")
            .env_clear()
            .envs(self.env.iter().chain(other_env).map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = child else { return };
        let pid = child.id().unwrap_or(0);
        lock(&self.running).push(pid);
        let stdout = child.stdout.take();
        let ticks = self.ticks.clone();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let Some(stdout) = stdout else { return };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(summary) = serde_json::from_str::<Value>(&line) {
                    lock(&ticks).push(summary);
                }
            }
        });
        if tokio::time::timeout(self.timeout, child.wait()).await.is_err() {
            // Lambda's timeout: no signal the process could handle, no shutdown.
            let _ = child.start_kill();
            let _ = child.wait().await;
            lock(&self.timed_out).push(epoch.elapsed().as_secs_f64());
        }
        let _ = reader.await;
        lock(&self.running).retain(|p| *p != pid);
    }

    /// SIGKILLs every running invocation, and starts none for `pause`.
    pub fn kill_all(&self, pause: Duration) {
        *lock(&self.paused_until) = Some(Instant::now() + pause);
        for pid in lock(&self.running).iter() {
            signal(*pid, Signal::SIGKILL);
            self.killed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends `sig` to every running invocation; returns how many.
    pub fn signal_all(&self, sig: Signal) -> usize {
        let running = lock(&self.running);
        for pid in running.iter() {
            signal(*pid, sig);
        }
        running.len()
    }

    /// Ends the schedule's invocations (at the end of the soak).
    pub fn stop(&self) {
        *lock(&self.paused_until) = Some(Instant::now() + Duration::from_secs(3600));
        self.signal_all(Signal::SIGCONT);
        self.signal_all(Signal::SIGKILL);
    }
}

/// An invocation counted in [`Schedule::active`] from before it is spawned until it ends, however
/// it ends (a task dropped unpolled included).
struct Active(Arc<Schedule>);

impl Active {
    /// A place within the reserved concurrency, if one is free.
    fn take(schedule: &Arc<Schedule>) -> Option<Self> {
        let taken = schedule
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < schedule.concurrency).then_some(n + 1))
            .is_ok();
        taken.then(|| Self(schedule.clone()))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}
