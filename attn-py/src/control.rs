//! Long calls without the GIL: the work runs on a scoped thread while the calling thread stays in
//! Python, so that Ctrl-C is seen and progress reaches a Python callback (tqdm) on the thread that
//! owns it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attn_pipeline::{Control, ProgressEvent};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How often the calling thread wakes to look at signals and progress.
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` on another thread with a [`Control`] whose cancel flag Ctrl-C sets, calling
/// `progress(kind, stage, value)` (`kind`: `"start"` with the stage's total, `"advance"` with the
/// units done, `"finish"` with 0) from this thread for every event, in order.
///
/// After Ctrl-C (or an exception raised by `progress`) the flag is set, the work finishes the unit
/// in hand and returns, and then the exception is raised: what the work finished is kept (the
/// pipeline's heads are on disk), nothing runs on behind the user's back.
pub(crate) fn run_with_control<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(Control<'_>) -> T + Send,
) -> PyResult<T> {
    run_detached(py, progress, |cancel, record| {
        work(Control::interruptible(cancel, record))
    })
}

/// [`run_with_control`] for work that takes the cancel flag itself (as an `Arc`, which a
/// projection's parameters can hold).
pub(crate) fn run_detached<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Arc<AtomicBool>, &(dyn Fn(ProgressEvent) + Sync)) -> T + Send,
) -> PyResult<T> {
    let cancel = Arc::new(AtomicBool::new(false));
    let events: Mutex<Vec<ProgressEvent>> = Mutex::new(Vec::new());
    let record = |event: ProgressEvent| {
        if let Ok(mut queue) = events.lock() {
            queue.push(event);
        }
    };
    let mut raised: Option<PyErr> = None;
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| work(&cancel, &record));
        loop {
            let finished = worker.is_finished();
            let pending = events.lock().map(|mut q| std::mem::take(&mut *q));
            if let (Some(callback), Ok(pending)) = (progress, pending) {
                for event in pending {
                    if raised.is_some() {
                        break;
                    }
                    if let Err(e) = report(callback, event) {
                        cancel.store(true, Ordering::SeqCst);
                        raised = Some(e);
                    }
                }
            }
            if finished {
                break;
            }
            if raised.is_none()
                && let Err(e) = py.check_signals()
            {
                cancel.store(true, Ordering::SeqCst);
                raised = Some(e);
            }
            py.detach(|| std::thread::sleep(POLL));
        }
        worker.join()
    });
    let value = outcome.map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        PyRuntimeError::new_err(format!("attnviz: internal error (a panic): {what}"))
    })?;
    match raised {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

fn report(callback: &Bound<'_, PyAny>, event: ProgressEvent) -> PyResult<()> {
    let (kind, stage, value) = match event {
        ProgressEvent::Start { stage, total } => ("start", stage, total),
        ProgressEvent::Advance { stage, done } => ("advance", stage, done),
        ProgressEvent::Finish { stage } => ("finish", stage, 0),
    };
    callback.call1((kind, stage.as_str(), value))?;
    Ok(())
}
