//! The priority of the store's fjall worker 0.
//!
//! fjall 3.1 runs flushes and compactions on `worker_threads` threads fed by one queue. With
//! more than one, worker 0 never compacts: it puts every compaction request back on the queue so
//! that it stays free for flushes (`worker_pool.rs`, `WorkerMessage::Compact`). While another
//! worker runs a long compaction and a request waits, worker 0 takes it again at once, a busy
//! loop for as long as the compaction runs. After every flush one such request waits (fjall
//! sends one per worker), so on 2 cores at 10M x 4 the loop took ~29% of fjall's CPU samples.
//!
//! [`open_lowering_worker_zero`] opens the database and gives its worker 0 the nice value
//! [`WORKER_ZERO_NICE`]: under contention the loop gets a small share of a core instead of an
//! equal one, and a flush worker 0 picked up still moves at that share, where `SCHED_IDLE` (what
//! this module did before) stopped it for as long as the cores were busy. At 10M x 4, where
//! compaction keeps the cores busier, flushes queued behind the idle worker, sealed memtables
//! piled up to the write budget and the heap rose ~50 MiB through a run (figures in
//! ARCHITECTURE.md, "Flushes starved by the idle class"). Raising a thread's priority again, or
//! taking it out of `SCHED_IDLE`, needs privilege, so the nice value is set once and kept.
//!
//! It is not: a change to fjall's loop (fjall has no setting for it), nor portable: elsewhere
//! than on Linux, and whenever worker 0 cannot be told apart from other threads (another fjall
//! database opening at the same moment), the workers keep the default priority.

use fjall::{Database, DatabaseBuilder};
use std::sync::Mutex;

/// fjall names every worker thread of every database this.
const WORKER_NAME: &str = "fjall:worker";

/// Serializes opens within the process, so the worker threads that appear during one open are
/// that database's.
static OPENING: Mutex<()> = Mutex::new(());

/// The nice value of worker 0 (0 is the default, 19 the lowest priority): a weight of ~1/10 of
/// a default thread's.
const WORKER_ZERO_NICE: i32 = 10;

/// Opens `builder` with `workers` worker threads, then lowers worker 0's priority when there
/// is more than one (with one, that worker compacts and flushes, and there is no loop).
pub(super) fn open_lowering_worker_zero(builder: DatabaseBuilder<Database>, workers: usize) -> fjall::Result<Database> {
    let _opening = OPENING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = worker_threads();
    let db = builder.worker_threads(workers).open()?;
    // Off Linux there is no `/proc` to find the threads in.
    if workers > 1 && cfg!(target_os = "linux") {
        match spawned_first(&before, workers) {
            Some(tid) => lower(tid),
            None => tracing::debug!("fjall's worker 0 not told apart; its priority is left as it is"),
        }
    }
    Ok(db)
}

/// The first spawned of the `workers` threads that appeared since `before`, once exactly that
/// many did (a thread names itself when it starts, so they may take a moment to show).
fn spawned_first(before: &[i32], workers: usize) -> Option<i32> {
    for _ in 0..50 {
        let new: Vec<i32> = worker_threads().into_iter().filter(|tid| !before.contains(tid)).collect();
        if new.len() == workers {
            return first_allocated(new, pid_max());
        }
        if new.len() > workers {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    None
}

/// The id allocated first among ids handed out in turn by a counter that wraps at `pid_max`
/// (Linux allocates thread ids that way): the one after the widest gap, wrap included.
fn first_allocated(mut tids: Vec<i32>, pid_max: i32) -> Option<i32> {
    tids.sort_unstable();
    let (first, last) = (*tids.first()?, *tids.last()?);
    let mut best = (pid_max - last + first, first);
    for pair in tids.windows(2) {
        best = best.max((pair[1] - pair[0], pair[1]));
    }
    Some(best.1)
}

fn worker_threads() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == WORKER_NAME)
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

fn pid_max() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 22)
}

#[cfg(target_os = "linux")]
fn lower(tid: i32) {
    // SAFETY: plain integer arguments; `tid` names a thread of this process (Linux applies
    // PRIO_PROCESS to the one thread), and a wrong id only makes the call fail.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_ZERO_NICE) };
    if rc != 0 {
        tracing::debug!(tid, error = %std::io::Error::last_os_error(), "fjall's worker 0 kept its priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower(_tid: i32) {}

#[cfg(test)]
mod tests {
    use super::first_allocated;

    #[test]
    fn the_first_allocated_id_follows_the_widest_gap() {
        assert_eq!(first_allocated(vec![501, 500], 32_768), Some(500));
        assert_eq!(first_allocated(vec![300, 301, 299], 32_768), Some(299));
        // Allocated 32,767 then wrapped to 300.
        assert_eq!(first_allocated(vec![300, 32_767], 32_768), Some(32_767));
        assert_eq!(first_allocated(vec![], 32_768), None);
    }
}
