//! The inter-partition channel: one shared 4 KiB page holding two single-producer,
//! single-consumer byte rings (management → guest and guest → management), in the spirit of
//! Xen's event channels with a shared ring and Hyper-V's VMBus. Messages are a little-endian
//! `u16` length followed by that many bytes; a message never splits across a full ring.
//!
//! The hypervisor maps the page into both partitions at [`gpa`]`(id)`; the notification
//! hypercall (`ChannelNotify`) raises the other end's bound interrupt vector.

use core::sync::atomic::{AtomicU32, Ordering};

/// Guest-physical address of channel 0's page; channel `id` is at `gpa(id)`.
pub const BASE_GPA: u64 = 0xfe00_0000;
/// Most channels.
pub const MAX_CHANNELS: u64 = 16;
/// Bytes of data in one ring.
pub const RING_DATA: usize = 2040;
/// Longest message.
pub const MAX_MESSAGE: usize = 1024;

/// Where channel `id`'s page is mapped in both partitions.
pub const fn gpa(id: u64) -> u64 {
    BASE_GPA + id * 4096
}

/// One direction: `head` counts bytes ever written (by the producer), `tail` bytes ever read
/// (by the consumer); both wrap at 2^32.
#[repr(C)]
pub struct Ring {
    head: AtomicU32,
    tail: AtomicU32,
    data: [core::cell::UnsafeCell<u8>; RING_DATA],
}

// SAFETY: one producer writes only `head` and the free bytes, one consumer only `tail` and the
// used bytes; the atomics order the data accesses (release on publish, acquire on observe).
unsafe impl Sync for Ring {}

/// The shared page.
#[repr(C)]
pub struct Page {
    /// Management → guest.
    pub to_guest: Ring,
    /// Guest → management.
    pub to_mgmt: Ring,
}

const _: () = assert!(core::mem::size_of::<Page>() == 4096);

/// Why a send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not enough room now: try again after the consumer ran.
    Full,
    /// Longer than [`MAX_MESSAGE`].
    TooLong,
}

impl Ring {
    fn used(&self) -> usize {
        self.head.load(Ordering::Acquire).wrapping_sub(self.tail.load(Ordering::Acquire)) as usize
    }

    fn put(&self, at: u32, b: u8) {
        // SAFETY: the producer owns the free bytes it writes (between head and tail + RING_DATA).
        unsafe { *self.data[at as usize % RING_DATA].get() = b };
    }

    fn get(&self, at: u32) -> u8 {
        // SAFETY: the consumer reads only bytes published by `head` and not yet released.
        unsafe { *self.data[at as usize % RING_DATA].get() }
    }

    /// Producer side: appends one message.
    pub fn send(&self, msg: &[u8]) -> Result<(), SendError> {
        if msg.len() > MAX_MESSAGE {
            return Err(SendError::TooLong);
        }
        if RING_DATA - self.used().min(RING_DATA) < msg.len() + 2 {
            return Err(SendError::Full);
        }
        let head = self.head.load(Ordering::Relaxed);
        let len = (msg.len() as u16).to_le_bytes();
        for (i, &b) in len.iter().chain(msg).enumerate() {
            self.put(head.wrapping_add(i as u32), b);
        }
        self.head.store(head.wrapping_add(msg.len() as u32 + 2), Ordering::Release);
        Ok(())
    }

    /// Consumer side: takes the oldest message into `buf`, returning its length. A message
    /// longer than `buf` is cut (the rest is dropped). `None` when the ring is empty or
    /// corrupt (a length that claims more than was written).
    pub fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        let used = self.used();
        if !(2..=RING_DATA).contains(&used) {
            return None;
        }
        let tail = self.tail.load(Ordering::Relaxed);
        let len = u16::from_le_bytes([self.get(tail), self.get(tail.wrapping_add(1))]) as usize;
        if len + 2 > used {
            return None;
        }
        for (i, slot) in buf.iter_mut().take(len).enumerate() {
            *slot = self.get(tail.wrapping_add(2 + i as u32));
        }
        self.tail.store(tail.wrapping_add(len as u32 + 2), Ordering::Release);
        Some(len.min(buf.len()))
    }

    /// True when no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.used() < 2
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    fn page() -> Box<Page> {
        // SAFETY: all-zero bytes are a valid empty Page (atomics 0, data 0).
        unsafe { Box::new(core::mem::zeroed()) }
    }

    #[test]
    fn messages_round_trip_in_order() {
        let p = page();
        p.to_mgmt.send(b"hello").unwrap();
        p.to_mgmt.send(b"").unwrap();
        p.to_mgmt.send(b"world!").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(p.to_mgmt.recv(&mut buf), Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(p.to_mgmt.recv(&mut buf), Some(0));
        assert_eq!(p.to_mgmt.recv(&mut buf), Some(6));
        assert_eq!(&buf[..6], b"world!");
        assert_eq!(p.to_mgmt.recv(&mut buf), None);
        assert!(p.to_guest.is_empty());
    }

    #[test]
    fn full_ring_refuses_and_wraps_after_draining() {
        let p = page();
        let msg = [7u8; 1000];
        p.to_guest.send(&msg).unwrap();
        p.to_guest.send(&msg).unwrap();
        assert_eq!(p.to_guest.send(&msg), Err(SendError::Full));
        assert_eq!(p.to_guest.send(&[0; MAX_MESSAGE + 1]), Err(SendError::TooLong));
        let mut buf = [0u8; 1024];
        for round in 0..50u8 {
            assert_eq!(p.to_guest.recv(&mut buf), Some(1000));
            let m = [round; 1000];
            p.to_guest.send(&m).unwrap();
        }
    }

    #[test]
    fn corrupt_indices_do_not_panic() {
        let p = page();
        p.to_mgmt.head.store(5000, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        assert_eq!(p.to_mgmt.recv(&mut buf), None);
        p.to_mgmt.head.store(4, Ordering::Relaxed);
        p.to_mgmt.put(0, 0xff);
        p.to_mgmt.put(1, 0xff);
        assert_eq!(p.to_mgmt.recv(&mut buf), None, "length larger than what was written");
    }

    #[test]
    fn short_buffer_cuts_the_message() {
        let p = page();
        p.to_mgmt.send(b"abcdef").unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(p.to_mgmt.recv(&mut buf), Some(3));
        assert_eq!(&buf, b"abc");
        assert!(p.to_mgmt.is_empty());
    }
}
