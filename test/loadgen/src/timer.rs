//! One thread's timed loop: the wall clock and the thread's own CPU time over
//! it, as the JSON object each load prints (seconds, rate, user_seconds,
//! system_seconds, pid, and the count under the load's own name).
use std::time::Instant;

use nix::sys::resource::{getrusage, UsageWho};

/// User and system CPU seconds of the calling thread.
pub fn thread_cpu() -> (f64, f64) {
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => (secs(u.user_time()), secs(u.system_time())),
        Err(_) => (0.0, 0.0),
    }
}

/// Started just before the loop, on the thread that runs it.
pub struct Timer {
    start: Instant,
    cpu: (f64, f64),
}

impl Timer {
    pub fn start() -> Timer {
        Timer {
            start: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// The loop made `n` of `what` (`"sends"`, say): the object to print.
    pub fn stop(self, what: &str, n: u64) -> serde_json::Value {
        let cpu = thread_cpu();
        let seconds = self.start.elapsed().as_secs_f64();
        let mut out = serde_json::json!({
            "seconds": seconds,
            "rate": n as f64 / seconds,
            "user_seconds": cpu.0 - self.cpu.0,
            "system_seconds": cpu.1 - self.cpu.1,
            "pid": std::process::id(),
        });
        out[what] = n.into();
        out
    }
}
