//! A restore's walk of the snapshot's tree, done once and kept.
//!
//! rustic walks the tree of a restore twice: once to plan it (folders, which blobs go where)
//! and once to set the metadata after the contents, reading and decoding every tree blob each
//! time, on one thread. The engine walks it once before the lock's second look (read-only
//! work, done while the lock settles) and hands the kept entries to both, when there are at
//! most [`KEEP_AT_MOST`]; a larger tree is walked as rustic does (twice, as it goes), so that
//! memory stays bounded whatever the tree.

/// The most entries of a tree kept in memory for a restore: about 400 bytes each (path and
/// node), so at most ~40 MiB; the benchmark's 20,346 entries take ~8 MiB.
pub(super) const KEEP_AT_MOST: usize = 100_000;

/// Walks `entries` and keeps them when there are at most `at_most` (`None` when there are
/// more: the walk stops at the first one past the bound). The walk's first error is returned.
pub(super) fn keep_walk<T, E>(
    entries: impl Iterator<Item = Result<T, E>>,
    at_most: usize,
) -> Result<Option<Vec<T>>, E> {
    let mut kept = Vec::new();
    for entry in entries {
        if kept.len() == at_most {
            return Ok(None);
        }
        kept.push(entry?);
    }
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_within_the_bound_is_kept_whole_in_order() {
        let got = keep_walk((0..5).map(Ok::<_, String>), 5).unwrap();
        assert_eq!(got, Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(
            keep_walk(std::iter::empty::<Result<u8, String>>(), 5).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn a_walk_past_the_bound_is_not_kept_and_stops_there() {
        let mut seen = 0;
        let walk = (0..1_000_000).map(|i| {
            seen += 1;
            Ok::<_, String>(i)
        });
        assert_eq!(keep_walk(walk, 10).unwrap(), None);
        // Stopped at the eleventh entry: a huge tree is not walked to its end here.
        assert_eq!(seen, 11);
    }

    #[test]
    fn an_error_of_the_walk_is_returned() {
        let walk = vec![Ok(1), Err("tree blob unreadable".to_string()), Ok(3)].into_iter();
        assert_eq!(keep_walk(walk, 10).unwrap_err(), "tree blob unreadable");
    }
}
