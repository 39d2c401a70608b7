//! Byte-level mutations in the manner of libFuzzer's (`FuzzerMutate.cpp`'s list): bit flips,
//! random and "interesting" bytes and integers, insertions, deletions, duplications, splices
//! with another input of the pool, and truncation. Inputs stay under [`MAX_LEN`].

use crate::rng::Rng;

/// Longest input the driver makes.
pub const MAX_LEN: usize = 1 << 16;

/// Values at the edges of integer ranges, written little-endian at 1, 2, 4 or 8 bytes.
const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

/// Applies one to eight mutations to `data`; `other` is a second input for splices.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(8) {
        one(rng, data, other);
    }
    data.truncate(MAX_LEN);
}

fn one(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    let len = data.len();
    let at = rng.below(len);
    match rng.below(11) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = rng.next() as u8,
        2 | 3 => {
            let width = 1 << rng.below(4);
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let v = if rng.below(2) == 0 { v } else { v.wrapping_neg() };
            let end = (at + width).min(len);
            data[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        4 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        5 => {
            let end = (at + 1 + rng.below(16)).min(len);
            data.drain(at..end);
        }
        6 => {
            let end = (at + 1 + rng.below(64)).min(len);
            let copy = data[at..end].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        7 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let from = rng.below(other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        8 if !other.is_empty() => {
            // Overwrite a stretch with the other's bytes at the same place.
            let end = (at + 1 + rng.below(64)).min(len).min(other.len());
            if at < end {
                data[at..end].copy_from_slice(&other[at..end]);
            }
        }
        9 => data.truncate(at.max(1)),
        _ => {
            let v = data[at];
            data[at] = v.wrapping_add(rng.next() as u8 % 35).wrapping_sub(17);
        }
    }
}
