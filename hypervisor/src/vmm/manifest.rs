//! The partition manifest, as the hypervisor reads it from its `manifest` boot module: the
//! schema, the parsing (the `toml` crate) and every check live in the `hvmanifest` crate
//! (`hypervisor/manifest`), shared with the xtask, which checks a scenario with the same code
//! before it packs a boot image. Format: `docs/guests.md`.

pub use hvmanifest::{
    CpuRequest, Expect, ImageFormat, Manifest, ManifestError, OnStop, PartitionSpec, Role, parse,
    parse_bytes,
};
