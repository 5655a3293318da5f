//! [backplan patch] How a data or tree blob is compressed before it is encrypted (see
//! BACKPLAN.md, "Fourth patch").
//!
//! - The zstd level is chosen per blob: a blob whose sample compresses less than 2:1 at level
//!   1 (random bytes, hex of random bytes, media, already compressed data) is compressed at
//!   level 1, where level 3's match search finds nothing more on such data and costs ~2.5x the
//!   CPU; every other blob at the repository's level, as before. The level is not recorded in
//!   the repository: every level decompresses the same way.
//! - A blob whose compressed form is not smaller than itself is stored uncompressed (no
//!   uncompressed length in its index entry: restic's repository format version 2 allows both).
//! - One zstd context per thread, reused, instead of one per blob.

use std::cell::RefCell;

use zstd::bulk::{Compressor, Decompressor};

/// The bytes of a blob's sample compressed at level 1 to judge how it compresses.
const SAMPLE: usize = 64 * 1024;

/// A blob at most this long is not sampled (its level is the repository's).
const SAMPLE_FROM: usize = 2 * SAMPLE;

/// The level a blob that compresses less than 2:1 is compressed at.
const ENTROPY_BOUND_LEVEL: i32 = 1;

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut Compressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Compressor::new(level)?);
        }
        let compressor = slot.as_mut().expect("set above");
        compressor.set_compression_level(level)?;
        f(compressor)
    })
}

/// The zstd level `data` is compressed at, for a repository whose level is `level` (0 is
/// zstd's default, 3). Levels above 3 (chosen for size, not speed) and below 1 are kept.
pub(crate) fn level_for(data: &[u8], level: i32) -> std::io::Result<i32> {
    if !(0..=3).contains(&level) || level == ENTROPY_BOUND_LEVEL || data.len() <= SAMPLE_FROM {
        return Ok(level);
    }
    let start = (data.len() - SAMPLE) / 2;
    let sample = &data[start..start + SAMPLE];
    let compressed = with_compressor(ENTROPY_BOUND_LEVEL, |c| c.compress(sample))?;
    Ok(if compressed.len() * 2 > SAMPLE {
        ENTROPY_BOUND_LEVEL
    } else {
        level
    })
}

/// `data` compressed for a repository whose zstd level is `level`, or `None` when the
/// compressed form would not be smaller (the blob is then stored uncompressed).
pub(crate) fn compress(data: &[u8], level: i32) -> std::io::Result<Option<Vec<u8>>> {
    let level = level_for(data, level)?;
    let compressed = with_compressor(level, |c| c.compress(data))?;
    Ok((compressed.len() < data.len()).then_some(compressed))
}

/// Decompresses a blob whose uncompressed length is `length` (one context per thread).
pub(crate) fn decompress(data: &[u8], length: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new()?);
        }
        slot.as_mut().expect("set above").decompress(data, length)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn random_bytes_are_stored_uncompressed() {
        assert!(compress(&random(1 << 20, 1), 0).unwrap().is_none());
    }

    #[test]
    fn hex_of_random_bytes_goes_to_level_1_and_text_keeps_the_repository_s_level() {
        let hex: Vec<u8> = random(1 << 19, 2)
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        assert_eq!(level_for(&hex, 0).unwrap(), 1);
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("row {i} status shipped date 2024-01-{:02}\n", i % 28 + 1).into_bytes())
            .collect();
        assert_eq!(level_for(&text, 0).unwrap(), 0);
        assert_eq!(level_for(&hex, 19).unwrap(), 19, "a level chosen for size is kept");
        for data in [hex, text] {
            let c = compress(&data, 0).unwrap().expect("compressible");
            assert_eq!(decompress(&c, data.len()).unwrap(), data);
        }
    }
}
