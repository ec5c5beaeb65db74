//! Which heads a run works on: layer/head filters and `--shard k/n` for fanning a model out over
//! many machines.

use std::str::FromStr;

use attn_types::HeadId;

use crate::error::{PipelineError, Result, bail, input};

/// One shard `index` of `count` (`--shard 0/4` .. `--shard 3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Zero-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| input!("`{s}` is not of the form k/n (e.g. 0/4)"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| input!("shard index `{k}` is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| input!("shard count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            bail!("shard {index}/{count}: the index must be below the count");
        }
        Ok(Shard { index, count })
    }
}

/// Parses a list like `0,2,5-7` into sorted unique numbers.
pub fn parse_index_list(s: &str) -> Result<Vec<u16>> {
    let mut out = parse_index_sequence(s)?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Parses a list like `8,4,12-13` into its numbers as written: in order, repeats kept (for lists
/// whose order means something, such as the model layer of each layer of an input array).
pub fn parse_index_sequence(s: &str) -> Result<Vec<u16>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: u16 = a
                .trim()
                .parse()
                .map_err(|_| input!("`{part}` is not a range like 2-5"))?;
            let b: u16 = b
                .trim()
                .parse()
                .map_err(|_| input!("`{part}` is not a range like 2-5"))?;
            if a > b {
                bail!("range `{part}` runs backwards");
            }
            out.extend(a..=b);
        } else {
            out.push(
                part.parse()
                    .map_err(|_| input!("`{part}` is not a number"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("`{s}` selects nothing");
    }
    Ok(out)
}

/// The heads selected from a `layers x heads` model, layer-major, then restricted to one shard.
///
/// Shards take heads round-robin so that every shard gets early and late layers alike. A shard
/// beyond the selection's heads (`--shard 5/10` of 4 heads) is empty: nothing to do, not an error
/// (a job array may have more tasks than heads).
pub fn select_heads(
    num_layers: u16,
    num_heads: u16,
    layers: Option<&[u16]>,
    heads: Option<&[u16]>,
    shard: Option<Shard>,
) -> Result<Vec<HeadId>> {
    for (what, list, max) in [
        ("--layers", layers, num_layers),
        ("--heads", heads, num_heads),
    ] {
        if let Some(bad) = list.and_then(|l| l.iter().find(|&&v| v >= max)) {
            bail!("{what}: {bad} is out of range; the model has {max} (numbered from 0)");
        }
    }
    let all: Vec<HeadId> = HeadId::all(num_layers, num_heads)
        .filter(|h| layers.is_none_or(|l| l.contains(&h.layer)))
        .filter(|h| heads.is_none_or(|l| l.contains(&h.head)))
        .collect();
    let selected: Vec<HeadId> = match shard {
        Some(s) => all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % s.count == s.index)
            .map(|(_, h)| h)
            .collect(),
        None => all,
    };
    if selected.is_empty() && shard.is_none() {
        bail!("the layer/head selection leaves no head to process");
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_heads() {
        let all = select_heads(6, 12, None, None, None).unwrap();
        let mut union: Vec<HeadId> = (0..5)
            .flat_map(|k| {
                select_heads(6, 12, None, None, Some(Shard { index: k, count: 5 })).unwrap()
            })
            .collect();
        union.sort();
        assert_eq!(union, all);
    }

    #[test]
    fn a_shard_beyond_the_heads_is_empty() {
        let two = Some(&[0u16, 1][..]);
        let shard = |index| Some(Shard { index, count: 10 });
        assert_eq!(select_heads(1, 4, None, two, shard(1)).unwrap().len(), 1);
        assert!(select_heads(1, 4, None, two, shard(5)).unwrap().is_empty());
        assert!(select_heads(1, 4, None, Some(&[9]), None).is_err());
    }

    #[test]
    fn parses_lists_heads_and_shards() {
        assert_eq!(parse_index_list("3,0-2,2").unwrap(), vec![0, 1, 2, 3]);
        assert!(parse_index_list("5-2").is_err());
        assert!("2/2".parse::<Shard>().is_err());
        assert_eq!(
            "1/2".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 2 }
        );
    }

    #[test]
    fn out_of_range_selection_is_an_error() {
        let err = select_heads(2, 4, Some(&[2]), None, None).unwrap_err();
        assert!(err.to_string().contains("--layers"));
    }
}
