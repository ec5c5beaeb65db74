//! Progress bars and Ctrl-C for the library's long calls: the pipeline reports [`ProgressEvent`]s and
//! polls a flag; this module draws the events as indicatif bars and sets the flag on Ctrl-C.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use attn_pipeline::{ProgressEvent, Stage};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Set by Ctrl-C: workers finish the head in hand and start no new one.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        // If a handler cannot be installed (e.g. one exists), Ctrl-C still kills the process, and
        // atomic writes keep every finished head intact.
        let _ = ctrlc::set_handler(move || f.store(true, Ordering::SeqCst));
        flag
    })
    .clone()
}

/// One bar per stage on stderr (none with `--quiet`).
pub struct Bars {
    multi: MultiProgress,
    quiet: bool,
    bars: Mutex<HashMap<Stage, ProgressBar>>,
}

impl Bars {
    /// Bars on stderr, or hidden.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            quiet,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Draws one event.
    pub fn on(&self, event: ProgressEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return;
        };
        match event {
            ProgressEvent::Start { stage, total } => {
                let pb = if self.quiet {
                    ProgressBar::hidden()
                } else {
                    self.multi.add(ProgressBar::new(total))
                };
                let style = ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                pb.set_style(style);
                pb.set_message(stage.as_str());
                bars.insert(stage, pb);
            }
            ProgressEvent::Advance { stage, done } => {
                if let Some(pb) = bars.get(&stage) {
                    pb.set_position(done);
                }
            }
            ProgressEvent::Finish { stage } => {
                if let Some(pb) = bars.remove(&stage) {
                    pb.finish();
                }
            }
        }
    }
}
