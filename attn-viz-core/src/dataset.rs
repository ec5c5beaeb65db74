//! The views' input read from an attnviz dataset on disk (feature `dataset`): the one loader shared by
//! the renderers, the viewer's server and any other front end.

use std::sync::Arc;

use attn_store::{Dataset, StoreError};
use attn_types::{
    HeadDiagnostics, HeadId, HeadProjection, ModelInfo, ProjectionMethod, SequenceAttention,
    TokenTable,
};

use crate::{HeadData, ModelData, RawNorms, VizError};

/// Why a dataset's views could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A dataset file could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data does not form a valid view input.
    #[error(transparent)]
    View(#[from] VizError),
    /// No head has the requested projection.
    #[error(
        "{dataset}: no head has a {method} {dims}D projection; run `attnviz project {dataset} --methods {method} --dims {dims}` first"
    )]
    NoProjection {
        /// The dataset directory.
        dataset: String,
        /// The requested method.
        method: ProjectionMethod,
        /// The requested dimensions.
        dims: u8,
    },
}

/// What the views need from a dataset besides the projections, loaded once and shared by the views
/// of every projection (a server keeps one copy however many projections it shows).
#[derive(Debug)]
pub struct HeadTables {
    model: ModelInfo,
    tokens: TokenTable,
    heads: Vec<HeadId>,
    attention: Vec<Option<Vec<SequenceAttention>>>,
    norms: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    diagnostics: Vec<Option<HeadDiagnostics>>,
}

impl HeadTables {
    /// Loads the token table and, for every head of `dataset` (or only those in `only`), its norms
    /// before scaling, normalization diagnostics and attention.
    pub fn load(dataset: &Dataset, only: Option<&[HeadId]>) -> Result<Self, LoadError> {
        let mut t = HeadTables {
            model: dataset.meta().model.clone(),
            tokens: dataset.read_tokens()?,
            heads: Vec::new(),
            attention: Vec::new(),
            norms: Vec::new(),
            diagnostics: Vec::new(),
        };
        for head in dataset.heads()? {
            if only.is_some_and(|o| !o.contains(&head)) {
                continue;
            }
            t.norms.push(Some(dataset.read_head_norms(head)?));
            t.diagnostics
                .push(dataset.read_head_normalization(head)?.map(|(_, d)| d));
            t.attention.push(if dataset.has_attention(head) {
                Some(dataset.read_attention(head)?)
            } else {
                None
            });
            t.heads.push(head);
        }
        Ok(t)
    }

    /// The model.
    pub fn model(&self) -> &ModelInfo {
        &self.model
    }

    /// All tokens.
    pub fn tokens(&self) -> &TokenTable {
        &self.tokens
    }

    /// The loaded heads, in dataset order.
    pub fn heads(&self) -> &[HeadId] {
        &self.heads
    }

    /// The stored attention of `head`, when it was loaded and the dataset has attention.
    pub fn attention(&self, head: HeadId) -> Option<&[SequenceAttention]> {
        let i = self.heads.iter().position(|h| *h == head)?;
        self.attention[i].as_deref()
    }
}

/// The data of one projection's views: the shared [`HeadTables`] plus the projection of every head
/// that has one, so that [`ModelData`] can borrow them. Derefs to the tables.
#[derive(Debug)]
pub struct ViewData {
    tables: Arc<HeadTables>,
    /// `(index into the tables' heads, projection)`.
    projections: Vec<(usize, HeadProjection)>,
}

impl std::ops::Deref for ViewData {
    type Target = HeadTables;
    fn deref(&self) -> &HeadTables {
        &self.tables
    }
}

impl ViewData {
    /// Loads the heads of `dataset` that have a `method`/`dims` projection (all of them, or `only`).
    pub fn load(
        dataset: &Dataset,
        method: ProjectionMethod,
        dims: u8,
        only: Option<&[HeadId]>,
    ) -> Result<Self, LoadError> {
        Self::with_tables(
            Arc::new(HeadTables::load(dataset, only)?),
            dataset,
            method,
            dims,
        )
    }

    /// The `method`/`dims` projections of the heads in `tables`.
    pub fn with_tables(
        tables: Arc<HeadTables>,
        dataset: &Dataset,
        method: ProjectionMethod,
        dims: u8,
    ) -> Result<Self, LoadError> {
        let mut projections = Vec::new();
        for (i, &head) in tables.heads.iter().enumerate() {
            if dataset.has_projection(head, method, dims) {
                projections.push((i, dataset.read_projection(head, method, dims)?));
            }
        }
        if projections.is_empty() {
            return Err(LoadError::NoProjection {
                dataset: dataset.dir().display().to_string(),
                method,
                dims,
            });
        }
        Ok(ViewData {
            tables,
            projections,
        })
    }

    /// The projections loaded, with their heads.
    pub fn projections(&self) -> impl Iterator<Item = &HeadProjection> {
        self.projections.iter().map(|(_, p)| p)
    }

    /// The view-model input borrowing this data.
    pub fn model_data(&self) -> Result<ModelData<'_>, VizError> {
        let t = &*self.tables;
        let heads = self
            .projections
            .iter()
            .map(|(i, projection)| {
                let mut h = HeadData::new(t.heads[*i], projection);
                h.attention = t.attention[*i].as_deref();
                h.norms = t.norms[*i].as_ref().map(|(q, k)| RawNorms {
                    queries: q,
                    keys: k,
                });
                h.diagnostics = t.diagnostics[*i].as_ref();
                h
            })
            .collect();
        ModelData::new(&t.tokens, t.model.num_layers, t.model.num_heads, heads)
    }
}
