//! Architecture layers: the shared x86 core, and the Intel (VMX) and AMD (SVM) backends below
//! the vendor-neutral interface in `vmm`.
pub mod svm;
pub mod vmx;
pub mod x86;
