//! Stopping a long fit from another thread: a shared flag that t-SNE, UMAP and the ceiling look at
//! once per iteration (epoch, step), so that Ctrl-C in a command line or a notebook ends a fit of
//! millions of iterations within one iteration's time instead of at its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ProjectError;

/// A flag a fit checks once per iteration; when set, the fit returns
/// [`ProjectError::Interrupted`]. The default never stops a fit.
///
/// It is not part of what a fit computes: two parameter sets that differ only in it compare equal,
/// and a fit that is never interrupted returns the same result with or without one.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::AtomicBool;
/// use attn_project::{Interrupt, ProjectError, Tsne};
/// use attn_types::Matrix;
///
/// let stop = Arc::new(AtomicBool::new(true)); // set before the fit: it stops at once
/// let data = Matrix::from_vec(40, 3, (0..120).map(|i| (i % 7) as f32).collect()).unwrap();
/// let fit = Tsne::params().perplexity(5.0).interrupt(Interrupt::new(stop)).check().unwrap().fit(&data);
/// assert_eq!(fit.unwrap_err(), ProjectError::Interrupted);
/// ```
#[derive(Clone, Default)]
pub struct Interrupt(Option<Arc<AtomicBool>>);

impl Interrupt {
    /// Stops fits when `flag` becomes true.
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        Interrupt(Some(flag))
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(Interrupted)` when the flag is set.
    pub(crate) fn check(&self) -> Result<(), ProjectError> {
        if self.is_set() {
            Err(ProjectError::Interrupted)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Interrupt(never)"),
            Some(flag) => write!(f, "Interrupt(set: {})", flag.load(Ordering::Relaxed)),
        }
    }
}

/// Always equal: the flag says when to stop, not what to compute.
impl PartialEq for Interrupt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use attn_types::Matrix;

    use super::*;
    use crate::attention::synthetic::head;
    use crate::{AttentionCeiling, AttentionEdges, Tsne, Umap};

    fn points() -> Matrix {
        let data: Vec<f32> = (0..300 * 4)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0)
            .collect();
        Matrix::from_vec(300, 4, data).expect("shape")
    }

    /// Sets the flag 100 ms from now; returns the flag.
    fn set_soon() -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            f.store(true, Ordering::Relaxed);
        });
        flag
    }

    /// A fit of millions of iterations stops within a second of the flag (the iteration in hand
    /// takes milliseconds here), with `Interrupted`.
    #[test]
    fn a_set_flag_stops_long_fits_between_iterations() {
        let data = points();
        let start = Instant::now();
        let tsne = Tsne::params()
            .iterations(10_000_000)
            .interrupt(Interrupt::new(set_soon()))
            .check()
            .expect("valid");
        assert_eq!(tsne.fit(&data).unwrap_err(), ProjectError::Interrupted);
        let umap = Umap::params()
            .n_epochs(Some(10_000_000))
            .interrupt(Interrupt::new(set_soon()))
            .check()
            .expect("valid");
        assert_eq!(umap.fit(&data).unwrap_err(), ProjectError::Interrupted);
        let h = head(200, true, 3);
        let edges = AttentionEdges::from_attention(&h.tokens, &h.attention, true).expect("edges");
        let ceiling = AttentionCeiling::params()
            .iterations(10_000_000)
            .interrupt(Interrupt::new(set_soon()))
            .check()
            .expect("valid");
        assert_eq!(ceiling.fit(&edges).unwrap_err(), ProjectError::Interrupted);
        // Three fits, each stopped 100 ms after it started.
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    /// A flag that is never set changes nothing: the same coordinates, bit for bit.
    #[test]
    fn an_unset_flag_leaves_the_fit_unchanged() {
        let data = points();
        let flag = Interrupt::new(Arc::new(AtomicBool::new(false)));
        let plain = Tsne::params().iterations(300).check().expect("valid");
        let watched = plain.with_interrupt(flag.clone());
        assert_eq!(plain, watched, "the flag is not part of the parameters");
        assert_eq!(
            plain.fit(&data).expect("fits"),
            watched.fit(&data).expect("fits")
        );
        let plain = Umap::params().n_epochs(Some(50)).check().expect("valid");
        let watched = plain.with_interrupt(flag);
        assert_eq!(
            plain.fit(&data).expect("fits"),
            watched.fit(&data).expect("fits")
        );
    }
}
