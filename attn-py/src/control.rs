//! Long calls without the GIL: the work runs on a scoped thread while the calling thread stays in
//! Python, so that Ctrl-C is seen and progress reaches a Python callback (tqdm) on the thread that
//! owns it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use attn_pipeline::{Control, PipelineError, ProgressEvent};
use attn_project::ProjectError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::error;

/// How often the calling thread looks at signals while the work runs (it wakes at once for progress
/// and for the work's end).
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` on another thread with a [`Control`] whose cancel flag Ctrl-C sets, calling
/// `progress(kind, stage, value)` (`kind`: `"start"` with the stage's total, `"advance"` with the
/// units done, `"finish"` with 0) from this thread for every event, in order.
///
/// After Ctrl-C (or an exception raised by `progress`) the flag is set, the work stops (the
/// pipeline finishes no further head; a layout in progress stops within an iteration) and returns,
/// and then the exception is raised: what the work finished is kept (the pipeline's heads are on
/// disk), nothing runs on behind the user's back.
pub(crate) fn run_with_control<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(Control<'_>) -> Result<T, PipelineError> + Send,
) -> PyResult<T> {
    run_detached(py, progress, |cancel, record| {
        work(Control::interruptible(cancel, record))
    })
}

/// What the work hands the calling thread: its progress events so far and whether it has ended.
#[derive(Default)]
struct Mailbox {
    events: Vec<ProgressEvent>,
    done: bool,
}

/// Marks the mailbox done when dropped: at the work's end, also when it panics, so that the calling
/// thread stops waiting.
struct Done<'a>(&'a (Mutex<Mailbox>, Condvar));

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let (lock, signal) = self.0;
        let mut m = match lock.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        m.done = true;
        signal.notify_one();
    }
}

/// An error that may only say the work was stopped (by the cancel flag), not that it failed.
pub(crate) trait Interruption: std::error::Error + Send + 'static {
    /// Whether this is the stop itself.
    fn is_interruption(&self) -> bool;
}

impl Interruption for ProjectError {
    fn is_interruption(&self) -> bool {
        matches!(self, ProjectError::Interrupted)
    }
}

impl Interruption for PipelineError {
    fn is_interruption(&self) -> bool {
        matches!(
            self.root(),
            PipelineError::Project(ProjectError::Interrupted)
        )
    }
}

/// [`run_with_control`] for work that takes the cancel flag itself (as an `Arc`, which a
/// projection's parameters can hold).
///
/// When the work fails of its own (not the stop), its error is raised even if Ctrl-C or the
/// progress callback's exception came meanwhile (which is then its `__cause__`): a real failure is
/// never hidden behind an interruption.
pub(crate) fn run_detached<T: Send, E: Interruption>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Arc<AtomicBool>, &(dyn Fn(ProgressEvent) + Sync)) -> Result<T, E> + Send,
) -> PyResult<T> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mailbox = (Mutex::new(Mailbox::default()), Condvar::new());
    let record = |event: ProgressEvent| {
        if let Ok(mut m) = mailbox.0.lock() {
            m.events.push(event);
            mailbox.1.notify_one();
        }
    };
    let mut raised: Option<PyErr> = None;
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let _done = Done(&mailbox);
            work(&cancel, &record)
        });
        loop {
            // Without the GIL: until an event, the end, or the next look at signals.
            let (events, done) = py.detach(|| {
                let Ok(guard) = mailbox.0.lock() else {
                    return (Vec::new(), true);
                };
                let mut m = match mailbox
                    .1
                    .wait_timeout_while(guard, POLL, |m| m.events.is_empty() && !m.done)
                {
                    Ok((m, _)) => m,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                (std::mem::take(&mut m.events), m.done)
            });
            if let Some(callback) = progress {
                for event in events {
                    if raised.is_some() {
                        break;
                    }
                    if let Err(e) = report(callback, event) {
                        cancel.store(true, Ordering::SeqCst);
                        raised = Some(e);
                    }
                }
            }
            if done {
                break;
            }
            if raised.is_none()
                && let Err(e) = py.check_signals()
            {
                cancel.store(true, Ordering::SeqCst);
                raised = Some(e);
            }
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
    match (value, raised) {
        (Err(e), raised) if !e.is_interruption() => {
            let failure = error(&e);
            failure.set_cause(py, raised);
            Err(failure)
        }
        (_, Some(raised)) => Err(raised),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(error(&e)),
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
