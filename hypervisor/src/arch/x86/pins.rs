//! Which host CPU runs which partition (issue 10, item 2): the manifest's `cpus = N` or
//! `cpus = [indices]`, and the management `create` call, ask here, and get either the CPUs or
//! an error that says why. Pure bookkeeping, host-tested; [`super::smp`] says which CPUs exist
//! and are ready.
//!
//! CPU 0 (the boot CPU) is never pinned: it runs the management partition and time-slices
//! every partition without CPUs of its own.

use alloc::vec::Vec;
use core::fmt;

/// A partition's CPU request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Any `n` free CPUs.
    Count(usize),
    /// Exactly these host CPU indices.
    List(Vec<usize>),
}

/// Why a request cannot be met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinError {
    /// `cpus = 0` or `cpus = []`.
    Empty,
    /// The index is past the machine's CPUs.
    NoSuchCpu { cpu: usize, cpus: usize },
    /// CPU 0 runs the management partition and the time-sliced ones.
    BootCpu,
    /// The CPU exists but did not come up with VMX/SVM on.
    NotReady(usize),
    /// The index is listed twice.
    Duplicate(usize),
    /// The CPU is pinned to another partition.
    Taken { cpu: usize, by: u64 },
    /// More CPUs asked for than are free.
    TooMany { asked: usize, free: usize },
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "cpus: asks for no CPU"),
            Self::NoSuchCpu { cpu, cpus } => {
                write!(
                    f,
                    "cpus: CPU {cpu} does not exist (the machine has {cpus}: 0 to {})",
                    cpus - 1
                )
            }
            Self::BootCpu => write!(f, "cpus: CPU 0 runs the management partition: not pinnable"),
            Self::NotReady(c) => write!(f, "cpus: CPU {c} did not come up with VMX/SVM on"),
            Self::Duplicate(c) => write!(f, "cpus: CPU {c} listed twice"),
            Self::Taken { cpu, by } => write!(f, "cpus: CPU {cpu} already runs partition {by}"),
            Self::TooMany { asked, free } => {
                write!(f, "cpus: {asked} CPU(s) asked for, {free} free")
            }
        }
    }
}

/// The pins of one machine.
#[derive(Clone, Debug, Default)]
pub struct Pins {
    /// Per CPU index: ready to take a partition, and the partition pinned there.
    cpus: Vec<(bool, Option<u64>)>,
}

impl Pins {
    /// A machine of `count` CPUs (the boot CPU included) of which `ready` take partitions.
    pub fn new(count: usize, ready: &[usize]) -> Self {
        Self { cpus: (0..count).map(|i| (i != 0 && ready.contains(&i), None)).collect() }
    }

    /// The CPUs `request` would get now, without taking them.
    pub fn check(&self, request: &Request) -> Result<Vec<usize>, PinError> {
        let free: Vec<usize> =
            (1..self.cpus.len()).filter(|&i| self.cpus[i].0 && self.cpus[i].1.is_none()).collect();
        match request {
            Request::Count(0) => Err(PinError::Empty),
            Request::Count(n) if *n > free.len() => {
                Err(PinError::TooMany { asked: *n, free: free.len() })
            }
            Request::Count(n) => Ok(free[..*n].to_vec()),
            Request::List(l) if l.is_empty() => Err(PinError::Empty),
            Request::List(l) => {
                for (k, &c) in l.iter().enumerate() {
                    if c >= self.cpus.len() {
                        return Err(PinError::NoSuchCpu { cpu: c, cpus: self.cpus.len() });
                    }
                    if c == 0 {
                        return Err(PinError::BootCpu);
                    }
                    if !self.cpus[c].0 {
                        return Err(PinError::NotReady(c));
                    }
                    if l[..k].contains(&c) {
                        return Err(PinError::Duplicate(c));
                    }
                    if let Some(by) = self.cpus[c].1 {
                        return Err(PinError::Taken { cpu: c, by });
                    }
                }
                Ok(l.clone())
            }
        }
    }

    /// Pins `partition` to the CPUs `request` gets; returns them.
    pub fn pin(&mut self, partition: u64, request: &Request) -> Result<Vec<usize>, PinError> {
        let got = self.check(request)?;
        for &c in &got {
            self.cpus[c].1 = Some(partition);
        }
        Ok(got)
    }

    /// Gives `partition`'s CPUs back (it was destroyed or ended); returns them.
    pub fn unpin(&mut self, partition: u64) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if c.1 == Some(partition) {
                c.1 = None;
                out.push(i);
            }
        }
        out
    }

    /// The partition pinned to `cpu`, if any.
    pub fn owner(&self, cpu: usize) -> Option<u64> {
        self.cpus.get(cpu).and_then(|c| c.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn counts_take_the_lowest_free_cpus() {
        let mut p = Pins::new(4, &[1, 2, 3]);
        assert_eq!(p.pin(7, &Request::Count(2)), Ok(vec![1, 2]));
        assert_eq!(p.pin(8, &Request::Count(2)), Err(PinError::TooMany { asked: 2, free: 1 }));
        assert_eq!(p.pin(8, &Request::Count(1)), Ok(vec![3]));
        assert_eq!(p.owner(2), Some(7));
        assert_eq!(p.unpin(7), vec![1, 2]);
        assert_eq!(p.owner(2), None);
        assert_eq!(p.check(&Request::Count(2)), Ok(vec![1, 2]));
        assert_eq!(p.check(&Request::Count(0)), Err(PinError::Empty));
    }

    #[test]
    fn lists_are_checked() {
        let mut p = Pins::new(4, &[1, 3]);
        assert_eq!(p.pin(1, &Request::List(vec![3])), Ok(vec![3]));
        let no = |l: Vec<usize>| p.check(&Request::List(l)).unwrap_err();
        assert_eq!(no(vec![3]), PinError::Taken { cpu: 3, by: 1 });
        assert_eq!(no(vec![4]), PinError::NoSuchCpu { cpu: 4, cpus: 4 });
        assert_eq!(no(vec![0]), PinError::BootCpu);
        assert_eq!(no(vec![2]), PinError::NotReady(2));
        assert_eq!(no(vec![1, 1]), PinError::Duplicate(1));
        assert_eq!(no(vec![]), PinError::Empty);
        // A failed request takes nothing.
        assert_eq!(p.pin(2, &Request::List(vec![1, 2])), Err(PinError::NotReady(2)));
        assert_eq!(p.owner(1), None);
        assert_eq!(
            PinError::NoSuchCpu { cpu: 9, cpus: 4 }.to_string(),
            "cpus: CPU 9 does not exist (the machine has 4: 0 to 3)"
        );
    }

    #[test]
    fn a_one_cpu_machine_pins_nothing() {
        let p = Pins::new(1, &[]);
        assert_eq!(p.check(&Request::Count(1)), Err(PinError::TooMany { asked: 1, free: 0 }));
        assert_eq!(p.check(&Request::List(vec![0])), Err(PinError::BootCpu));
    }
}
