//! The ABI between the hypervisor, its guests and the host tools.
//!
//! Everything here is plain data, except the measurement loops in [`bench`] (shared so that a
//! guest and the hypervisor's native baseline run identical instructions). Guests include this
//! crate to make hypercalls, the hypervisor to serve them, and the xtask to pack boot modules.
#![no_std]

pub mod bench;
pub mod channel;
pub mod exit;
pub mod hypercall;
pub mod pack;
pub mod rng;
pub mod start;
