use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::{Polynom, Polynom64};

/// The out and mod tables of one (window bits, polynom) pair.
type Tables = ([Polynom64; 256], [Polynom64; 256]);

/// Tables already computed in this process, by (window bits, polynom). [backplan patch]
///
/// rustic_core makes a `Rabin64` for every file it chunks; computing the two tables each time
/// was about a third of a cold backup's CPU. They depend only on the key, so they are computed
/// once and copied out (2 x 2 KiB) afterwards.
fn cached_tables(window_size_nb_bits: u32, mod_polynom: Polynom64) -> Tables {
    static CACHE: OnceLock<Mutex<HashMap<(u32, Polynom64), Tables>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (window_size_nb_bits, mod_polynom);
    if let Some(tables) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return *tables;
    }
    // Computed outside the lock: two threads racing here compute the same value.
    let window_size = 1 << window_size_nb_bits;
    let tables = (
        Rabin64::calculate_out_table(window_size, &mod_polynom),
        Rabin64::calculate_mod_table(&mod_polynom),
    );
    let _ = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, tables);
    tables
}

pub mod constants {
    use crate::Polynom64;

    /// Default irreducible modulo polynom.
    pub const MOD_POLYNOM: Polynom64 = 0x003D_A335_8B4D_C173;
}

/// A rolling hash implementation for 64 bit polynoms.
pub trait RollingHash64 {
    /// Resets the rolling hash.
    fn reset(&mut self);

    /// Attempt to prefill the window
    ///
    /// # Arguments
    ///
    /// * `iter` - The iterator to read from.
    fn prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>;

    /// Combines a reset with a prefill in an optimized way.
    ///
    /// # Arguments
    ///
    /// * `iter` - The iterator to read from.
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>;

    /// Slides the window by byte.
    ///
    /// # Arguments
    ///
    /// * `byte` - The byte to slide in.
    fn slide(&mut self, byte: u8);

    /// Returns the current hash as a `Polynom64`.
    fn get_hash(&self) -> &Polynom64;
}

/// A rolling hash implementation for 64 bit polynoms from Rabin.
#[derive(Debug, Clone)]
pub struct Rabin64 {
    // Configuration
    /// Window size.
    window_size: usize, // The size of the data window used in the hash calculation.
    /// Window size mask.
    window_size_mask: usize, // = window_size - 1, supposing that it is an exponent of 2.

    // Precalculations
    /// The number of bits to shift the polynom to the left.
    polynom_shift: i32,

    /// Precalculated out table.
    out_table: [Polynom64; 256],
    /// Precalculated mod table.
    mod_table: [Polynom64; 256],

    // Current state
    /// The data window.
    window_data: Vec<u8>,
    /// The current window index.
    window_index: usize,
    /// The current hash.
    pub hash: Polynom64,
}

impl Rabin64 {
    /// Calculates the out table. The out table is used to remove the byte that is sliding out of the window.
    #[must_use]
    pub fn calculate_out_table(window_size: usize, mod_polynom: &Polynom64) -> [Polynom64; 256] {
        let mut out_table = [0; 256];
        for (b, elem) in out_table.iter_mut().enumerate() {
            let mut hash = (b as Polynom64).modulo(mod_polynom);
            for _ in 0..window_size - 1 {
                hash <<= 8;
                hash = hash.modulo(mod_polynom);
            }
            *elem = hash;
        }

        out_table
    }

    /// Calculates the mod table. The mod table is used to add the byte that is sliding into the window.
    #[must_use]
    pub fn calculate_mod_table(mod_polynom: &Polynom64) -> [Polynom64; 256] {
        let mut mod_table = [0; 256];
        let k = mod_polynom.degree();
        for (b, elem) in mod_table.iter_mut().enumerate() {
            let p: Polynom64 = (b as Polynom64) << k;
            *elem = p.modulo(mod_polynom) | p;
        }

        mod_table
    }

    /// Creates a new `Rabin64` rolling hash.
    #[must_use]
    pub fn new(window_size_nb_bits: u32) -> Self {
        Self::new_with_polynom(window_size_nb_bits, &constants::MOD_POLYNOM)
    }

    /// Creates a new `Rabin64` rolling hash with a specific modulo polynom.
    ///
    /// # Arguments
    ///
    /// * `window_size_nb_bits` - The number of bits of the window size.
    /// * `mod_polynom` - The modulo polynom.
    #[must_use]
    pub fn new_with_polynom(window_size_nb_bits: u32, mod_polynom: &Polynom64) -> Self {
        let window_size = 1 << window_size_nb_bits;

        let window_data = vec![0; window_size];
        let (out_table, mod_table) = cached_tables(window_size_nb_bits, *mod_polynom);

        Self {
            window_size,
            window_size_mask: window_size - 1,
            polynom_shift: mod_polynom.degree() - 8,
            out_table,
            mod_table,
            window_data,
            window_index: 0,
            hash: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn hash_block(&mut self, bytes: &[u8], mod_polynom: Polynom64) {
        for v in bytes {
            self.hash <<= 8;
            self.hash |= Polynom64::from(*v);
            self.hash = self.hash.modulo(&mod_polynom);
        }
    }
}

impl Rabin64 {
    /// [backplan patch] Slides `bytes` in one by one up to and including the first byte after
    /// which `hash & split_mask == 0`; returns how many were slid (`bytes.len()` when none
    /// is). The same hashes and the same final state (hash and window) as calling
    /// [`RollingHash64::slide`] on each byte and checking after each.
    ///
    /// Faster on long inputs: after the first window's worth of bytes, the byte leaving the
    /// window is read from `bytes` itself, and the rest is split into [`LANES`] segments,
    /// each with its own hash (primed from the window of bytes before its segment: the hash
    /// depends only on the window's bytes), advanced together. One hash's steps form a
    /// chain of dependent table lookups; independent chains keep the processor busy.
    pub fn slide_to_boundary(&mut self, bytes: &[u8], split_mask: Polynom64) -> usize {
        let w = self.window_size;
        // Too short to be worth priming lanes: one byte at a time.
        if bytes.len() < w + LANES * 4 * w {
            return self.slide_each(bytes, split_mask);
        }
        // The first window's worth through the window buffer (it holds the bytes before).
        let head = self.slide_each(&bytes[..w], split_mask);
        if head < w || self.hash & split_mask == 0 {
            return head;
        }
        let rest = bytes.len() - w;
        let seg = rest / LANES;
        // Lane k covers bytes[start(k) .. start(k) + seg]; the last one also the remainder.
        let start = |k: usize| w + k * seg;
        let mut hash = [0 as Polynom64; LANES];
        hash[0] = self.hash;
        for (k, h) in hash.iter_mut().enumerate().skip(1) {
            *h = self.hash_of_window(&bytes[start(k) - w..start(k)]);
        }
        let mut found = [usize::MAX; LANES];
        let mut found_hash = [0 as Polynom64; LANES];
        let ins: [&[u8]; LANES] = std::array::from_fn(|k| &bytes[start(k)..start(k) + seg]);
        let outs: [&[u8]; LANES] = std::array::from_fn(|k| &bytes[start(k) - w..start(k) - w + seg]);
        for k in 0..LANES {
            // Lets the compiler drop the bounds checks below.
            assert!(ins[k].len() == seg && outs[k].len() == seg);
        }
        for t in 0..seg {
            let mut any = false;
            for k in 0..LANES {
                hash[k] = self.step(hash[k], outs[k][t], ins[k][t]);
                any |= hash[k] & split_mask == 0;
            }
            if any {
                for k in 0..LANES {
                    if found[k] == usize::MAX && hash[k] & split_mask == 0 {
                        found[k] = start(k) + t;
                        found_hash[k] = hash[k];
                    }
                }
                if found[0] != usize::MAX {
                    break;
                }
            }
        }
        let (n, h) = match (0..LANES).find(|&k| found[k] != usize::MAX) {
            Some(k) => (found[k] + 1, found_hash[k]),
            None => {
                // The remainder, on the last lane's hash.
                let mut h = hash[LANES - 1];
                let mut n = bytes.len();
                for p in start(LANES - 1) + seg..bytes.len() {
                    h = self.step(h, bytes[p - w], bytes[p]);
                    if h & split_mask == 0 {
                        n = p + 1;
                        break;
                    }
                }
                (n, h)
            }
        };
        // The window now holds the last `w` bytes slid, oldest at `window_index`.
        for (i, b) in bytes[n - w..n].iter().enumerate() {
            self.window_data[(self.window_index + i) & self.window_size_mask] = *b;
        }
        self.hash = h;
        n
    }

    /// The reference: one [`RollingHash64::slide`] per byte, checking after each.
    fn slide_each(&mut self, bytes: &[u8], split_mask: Polynom64) -> usize {
        for (i, b) in bytes.iter().enumerate() {
            self.slide(*b);
            if self.hash & split_mask == 0 {
                return i + 1;
            }
        }
        bytes.len()
    }

    /// One step of [`RollingHash64::slide`] on a hash given by value: `out` leaves the
    /// window, `byte` enters it.
    #[inline(always)]
    fn step(&self, mut hash: Polynom64, out: u8, byte: u8) -> Polynom64 {
        hash ^= self.out_table[usize::from(out)];
        let mod_index = (hash >> self.polynom_shift) & 255;
        hash <<= 8;
        hash |= Polynom64::from(byte);
        hash ^ self.mod_table[mod_index as usize]
    }

    /// The hash of a window holding exactly `window` (`window_size` bytes): the hash depends
    /// only on the window's bytes, and a window of zeros hashes to 0.
    fn hash_of_window(&self, window: &[u8]) -> Polynom64 {
        window.iter().fold(0, |h, b| self.step(h, 0, *b))
    }
}

/// [backplan patch] The independent hashes [`Rabin64::slide_to_boundary`] advances together.
const LANES: usize = 4;

impl RollingHash64 for Rabin64 {
    fn reset(&mut self) {
        self.window_data.clear();
        self.window_data.resize(self.window_size, 0);
        self.window_index = 0;
        self.hash = 0;

        // Not needed.
        // self.slide(1);
    }

    // Attempt to fills the window - 1 byte.
    fn prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>,
    {
        let mut nb_bytes_read = 0;
        for _ in 0..self.window_size - 1 {
            match iter.next() {
                Some(b) => {
                    self.slide(b);
                    nb_bytes_read += 1;
                }
                None => break,
            }
        }

        nb_bytes_read
    }

    // Combines a reset with a prefill in an optimized way.
    fn reset_and_prefill_window<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = u8>,
    {
        self.hash = 0;
        let mut nb_bytes_read = 0;
        for _ in 0..self.window_size - 1 {
            match iter.next() {
                Some(b) => {
                    // Take the old value out of the window and the hash.
                    // ... let's suppose that the buffer contains zeroes, do nothing.

                    // Put the new value in the window and in the hash.
                    self.window_data[self.window_index] = b;
                    let mod_index = (self.hash >> self.polynom_shift) & 255;
                    self.hash <<= 8;
                    self.hash |= Polynom64::from(b);
                    self.hash ^= self.mod_table[mod_index as usize];

                    // Move the windowIndex to the next position.
                    self.window_index = (self.window_index + 1) & self.window_size_mask;

                    nb_bytes_read += 1;
                }
                None => break,
            }
        }

        // Because we didn't overwrite that element in the loop above.
        self.window_data[self.window_index] = 0;

        nb_bytes_read
    }

    #[inline]
    fn slide(&mut self, byte: u8) {
        // Take the old value out of the window and the hash.
        let out_value = self.window_data[self.window_index];
        self.hash ^= self.out_table[out_value as usize];

        // Put the new value in the window and in the hash.
        self.window_data[self.window_index] = byte;
        let mod_index = (self.hash >> self.polynom_shift) & 255;
        self.hash <<= 8;
        self.hash |= Polynom64::from(byte);
        self.hash ^= self.mod_table[mod_index as usize];

        // Move the windowIndex to the next position.
        self.window_index = (self.window_index + 1) & self.window_size_mask;
    }

    #[inline]
    fn get_hash(&self) -> &Polynom64 {
        &self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::polynom::Polynom64;

    fn to_hex_string(polynoms: &[Polynom64], prefix: &str) -> String {
        let strs: Vec<String> = polynoms
            .iter()
            .map(|p| format!("{}{:016x} {}", prefix, p, 0))
            .collect();
        strs.join("\n")
    }

    #[test]
    fn print_tables() {
        let out_table = Rabin64::calculate_out_table(32, &constants::MOD_POLYNOM);
        let mod_table = Rabin64::calculate_mod_table(&constants::MOD_POLYNOM);
        println!("{}", to_hex_string(&out_table[..], "outTable "));
        println!("{}", to_hex_string(&mod_table[..], "modTable "));
    }

    /// [backplan patch] The cached tables are the ones computed directly, for several
    /// polynoms and window sizes, on first use and on reuse.
    #[test]
    fn cached_tables_equal_computed_ones() {
        for poly in [constants::MOD_POLYNOM, 0x0030_5c1a_1f6e_6a4b, 0x003a_b74f_61de_97d5] {
            for bits in [5u32, 6, 7] {
                for _ in 0..2 {
                    let r = Rabin64::new_with_polynom(bits, &poly);
                    assert_eq!(r.out_table, Rabin64::calculate_out_table(1 << bits, &poly));
                    assert_eq!(r.mod_table, Rabin64::calculate_mod_table(&poly));
                }
            }
        }
    }

    #[test]
    fn rabin_hash() {
        use std::cmp::max;

        // Random meaningless data.
        let data = [
            17u8, 28, 53, 64, 175, 216, 27, 208, 109, 130, 143, 35, 93, 244, 45, 18, 64, 193, 204,
            59, 169, 139, 53, 59, 55, 65, 242, 73, 60, 198, 45, 22, 56, 90, 81, 181,
        ];

        let mut rabin1 = Rabin64::new(5);
        let mut rabin2 = Rabin64::new(5);

        // Block by block, no optimization, used raw modulo formula.
        for i in 0..data.len() {
            let block = &data[(max(31, i) - 31)..=i];
            rabin1.reset();
            rabin1.hash_block(block, constants::MOD_POLYNOM);

            rabin2.slide(data[i]);

            //println!("{:02} {:02} {:016x} {:016x} {:?}", i, block.len(), rabin1.hash, rabin2.hash, block);
            assert_eq!(rabin1.hash, rabin2.hash);
        }
    }
}
