//! How a long pipeline call reports progress and is told to stop: a callback and a flag, so that a
//! CLI can draw progress bars and handle Ctrl-C, and a GUI or service can do its own thing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stage of the pipeline, in the order a run goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Running the model over the corpus (counts sequences).
    Extract,
    /// Normalizing and storing heads (counts heads).
    Normalize,
    /// Reading, normalizing and storing imported heads (counts heads).
    Import,
    /// Projecting heads (counts projections).
    Project,
}

impl Stage {
    /// Lower-case name, as progress bars label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Normalize => "normalize",
            Stage::Import => "import",
            Stage::Project => "project",
        }
    }
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A stage starts with `total` units of work.
    Start {
        /// The stage.
        stage: Stage,
        /// Units of work.
        total: u64,
    },
    /// `done` units of the stage are finished (monotone, at most `total`).
    Advance {
        /// The stage.
        stage: Stage,
        /// Units finished so far.
        done: u64,
    },
    /// The stage is over (finished or stopped).
    Finish {
        /// The stage.
        stage: Stage,
    },
}

/// What a pipeline call is given besides its plan: where progress goes and when to stop.
///
/// When `cancel` becomes true, workers finish the head in hand, start no new one, and the call
/// returns normally with `interrupted: true` in its summary; every finished head is on disk. Made
/// with [`Control::interruptible`], the layout in hand stops too, within one of its iterations
/// (t-SNE, UMAP: a fit of millions of iterations need not run to its end), and is not stored.
#[derive(Clone, Copy)]
pub struct Control<'a> {
    cancel: &'a AtomicBool,
    /// The same flag, shared with the fits in progress (see [`attn_project::Interrupt`]).
    interrupt: Option<&'a Arc<AtomicBool>>,
    progress: &'a (dyn Fn(ProgressEvent) + Sync),
}

impl std::fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("cancel", &self.cancel)
            .finish_non_exhaustive()
    }
}

/// A flag that is never set, for [`Control::silent`].
static NEVER: AtomicBool = AtomicBool::new(false);

impl<'a> Control<'a> {
    /// Reports to `progress` and stops when `cancel` is set.
    pub fn new(cancel: &'a AtomicBool, progress: &'a (dyn Fn(ProgressEvent) + Sync)) -> Self {
        Control {
            cancel,
            interrupt: None,
            progress,
        }
    }

    /// Reports to `progress` and stops when `cancel` is set, the layouts in progress included.
    pub fn interruptible(
        cancel: &'a Arc<AtomicBool>,
        progress: &'a (dyn Fn(ProgressEvent) + Sync),
    ) -> Self {
        Control {
            cancel,
            interrupt: Some(cancel),
            progress,
        }
    }

    /// No progress reports and no cancellation.
    pub fn silent() -> Control<'static> {
        Control {
            cancel: &NEVER,
            interrupt: None,
            progress: &|_| {},
        }
    }

    /// What stops the fits in progress: the cancel flag when made [`Control::interruptible`].
    pub(crate) fn interrupt(&self) -> attn_project::Interrupt {
        self.interrupt
            .map(|flag| attn_project::Interrupt::new(Arc::clone(flag)))
            .unwrap_or_default()
    }

    /// Whether the caller asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    pub(crate) fn start(&self, stage: Stage, total: usize) -> StageCounter<'a> {
        (self.progress)(ProgressEvent::Start {
            stage,
            total: total as u64,
        });
        StageCounter {
            control: *self,
            stage,
            done: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Counts one stage's finished units and reports them.
pub(crate) struct StageCounter<'a> {
    control: Control<'a>,
    stage: Stage,
    done: std::sync::atomic::AtomicU64,
}

impl StageCounter<'_> {
    /// One more unit finished.
    pub(crate) fn inc(&self) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        (self.control.progress)(ProgressEvent::Advance {
            stage: self.stage,
            done,
        });
    }

    /// `done` units finished (for stages that report absolute counts).
    pub(crate) fn set(&self, done: usize) {
        self.done.store(done as u64, Ordering::SeqCst);
        (self.control.progress)(ProgressEvent::Advance {
            stage: self.stage,
            done: done as u64,
        });
    }

    /// Whether the caller asked to stop.
    pub(crate) fn cancelled(&self) -> bool {
        self.control.cancelled()
    }

    /// Units finished.
    pub(crate) fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst) as usize
    }
}

impl Drop for StageCounter<'_> {
    fn drop(&mut self) {
        (self.control.progress)(ProgressEvent::Finish { stage: self.stage });
    }
}
