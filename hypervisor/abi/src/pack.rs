//! The boot pack: named files in one blob, for boot paths that carry a single module.
//!
//! The UEFI path (the `bootloader` crate's ramdisk) carries exactly one blob, and the multiboot
//! path may carry one too. Layout, all integers little-endian:
//!
//! ```text
//! 0x00  magic  "HVPACK01"
//! 0x08  u32    number of entries N
//! 0x0c  u32    reserved (0)
//! 0x10  N × entry { name: [u8; 48] NUL-padded, offset: u64, len: u64 }   (64 bytes each)
//! ...   file data, each file at a 4 KiB-aligned offset from the start of the pack
//! ```

/// First eight bytes of a pack.
pub const MAGIC: &[u8; 8] = b"HVPACK01";
/// Size of the fixed header before the entry table.
pub const HEADER_LEN: usize = 16;
/// Size of one entry in the table.
pub const ENTRY_LEN: usize = 64;
/// Longest file name.
pub const NAME_LEN: usize = 48;
/// Alignment of each file's data.
pub const DATA_ALIGN: usize = 4096;
/// The entry that holds the kernel command line, where a boot path has no other way to pass one.
pub const CMDLINE_ENTRY: &str = "cmdline";

/// Why a blob is not a valid pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackError {
    /// The blob is shorter than the header or does not start with [`MAGIC`].
    BadMagic,
    /// The entry table runs past the end of the blob.
    TruncatedTable,
    /// Entry `index` points outside the blob.
    EntryOutOfBounds { index: usize },
    /// Entry `index` has a name that is not UTF-8 or is empty.
    BadName { index: usize },
}

impl core::fmt::Display for PackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a boot pack (bad magic)"),
            Self::TruncatedTable => write!(f, "boot pack entry table is truncated"),
            Self::EntryOutOfBounds { index } => {
                write!(f, "boot pack entry {index} points outside the pack")
            }
            Self::BadName { index } => write!(f, "boot pack entry {index} has a bad name"),
        }
    }
}

/// A validated pack: every entry lies inside the blob and has a UTF-8 name.
#[derive(Clone, Copy, Debug)]
pub struct Pack<'a> {
    blob: &'a [u8],
    count: usize,
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl<'a> Pack<'a> {
    /// True when `blob` starts with the pack magic (it may still be malformed).
    pub fn is_pack(blob: &[u8]) -> bool {
        blob.len() >= HEADER_LEN && &blob[..8] == MAGIC
    }

    /// Validates the whole table.
    pub fn parse(blob: &'a [u8]) -> Result<Self, PackError> {
        if !Self::is_pack(blob) {
            return Err(PackError::BadMagic);
        }
        let count = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]) as usize;
        let table_end = count
            .checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(HEADER_LEN))
            .ok_or(PackError::TruncatedTable)?;
        if table_end > blob.len() {
            return Err(PackError::TruncatedTable);
        }
        let pack = Self { blob, count };
        for index in 0..count {
            pack.raw_entry(index)?;
        }
        Ok(pack)
    }

    fn raw_entry(&self, index: usize) -> Result<(&'a str, &'a [u8]), PackError> {
        let at = HEADER_LEN + index * ENTRY_LEN;
        let name_bytes = &self.blob[at..at + NAME_LEN];
        let name_len = name_bytes.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        let name = core::str::from_utf8(&name_bytes[..name_len])
            .ok()
            .filter(|n| !n.is_empty())
            .ok_or(PackError::BadName { index })?;
        let offset = read_u64(self.blob, at + NAME_LEN);
        let len = read_u64(self.blob, at + NAME_LEN + 8);
        let end = offset.checked_add(len).ok_or(PackError::EntryOutOfBounds { index })?;
        if end > self.blob.len() as u64 {
            return Err(PackError::EntryOutOfBounds { index });
        }
        Ok((name, &self.blob[offset as usize..end as usize]))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the pack holds no files.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The files, in table order.
    pub fn entries(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        (0..self.count).map(|i| self.raw_entry(i).expect("validated by parse"))
    }

    /// The file called `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.entries().find(|(n, _)| *n == name).map(|(_, d)| d)
    }
}

/// Size of the pack that [`write`] makes for files of these lengths.
pub fn packed_len(lens: &[usize]) -> usize {
    let mut end = align_up(HEADER_LEN + lens.len() * ENTRY_LEN);
    for &l in lens {
        end = align_up(end + l);
    }
    end
}

const fn align_up(x: usize) -> usize {
    x.div_ceil(DATA_ALIGN) * DATA_ALIGN
}

/// Writes a pack of `files` into `out`, which must be [`packed_len`] bytes long.
///
/// # Panics
/// If a name is empty or longer than [`NAME_LEN`], or `out` has the wrong length (host tools
/// check names before they call this).
pub fn write(files: &[(&str, &[u8])], out: &mut [u8]) {
    let mut total = align_up(HEADER_LEN + files.len() * ENTRY_LEN);
    out.fill(0);
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&(files.len() as u32).to_le_bytes());
    for (i, (name, data)) in files.iter().enumerate() {
        assert!(!name.is_empty() && name.len() <= NAME_LEN, "bad pack name {name:?}");
        let at = HEADER_LEN + i * ENTRY_LEN;
        out[at..at + name.len()].copy_from_slice(name.as_bytes());
        out[at + NAME_LEN..at + NAME_LEN + 8].copy_from_slice(&(total as u64).to_le_bytes());
        out[at + NAME_LEN + 8..at + ENTRY_LEN].copy_from_slice(&(data.len() as u64).to_le_bytes());
        out[total..total + data.len()].copy_from_slice(data);
        total = align_up(total + data.len());
    }
    assert_eq!(total, out.len(), "pack buffer has the wrong length");
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    fn make(files: &[(&str, &[u8])]) -> std::vec::Vec<u8> {
        let lens: std::vec::Vec<usize> = files.iter().map(|f| f.1.len()).collect();
        let mut out = vec![0u8; packed_len(&lens)];
        write(files, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let blob = make(&[("cmdline", b"loglevel=debug"), ("probe", &[1, 2, 3, 4, 5])]);
        let p = Pack::parse(&blob).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("cmdline"), Some(&b"loglevel=debug"[..]));
        assert_eq!(p.get("probe"), Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(p.get("nope"), None);
        assert_eq!(blob.len() % DATA_ALIGN, 0);
    }

    #[test]
    fn rejects_bad_magic_and_truncation() {
        assert_eq!(Pack::parse(b"HVPACK0").unwrap_err(), PackError::BadMagic);
        assert_eq!(Pack::parse(&[0u8; 64]).unwrap_err(), PackError::BadMagic);
        let mut blob = make(&[("a", b"xyz")]);
        blob[8] = 200; // claims 200 entries
        assert_eq!(Pack::parse(&blob).unwrap_err(), PackError::TruncatedTable);
    }

    #[test]
    fn rejects_entry_outside_blob() {
        let mut blob = make(&[("a", b"xyz")]);
        let len_at = HEADER_LEN + NAME_LEN + 8;
        blob[len_at..len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Pack::parse(&blob).unwrap_err(), PackError::EntryOutOfBounds { index: 0 });
    }

    #[test]
    fn rejects_empty_name() {
        let mut blob = make(&[("a", b"xyz")]);
        blob[HEADER_LEN] = 0;
        assert_eq!(Pack::parse(&blob).unwrap_err(), PackError::BadName { index: 0 });
    }
}
