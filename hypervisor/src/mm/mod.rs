//! Memory: address newtypes, the physical frame allocator, and one page-table builder that
//! serves the hypervisor's own tables, EPT and NPT through an entry format each.
pub mod addr;
pub mod frames;
pub mod lowmem;
pub mod pagetable;
pub mod place;
