#!/usr/bin/env bash
# Boots the built multiboot hypervisor in QEMU, serial console on this terminal.
# For tweaking QEMU flags by hand; `cargo xtask run` is the main entry (it also builds).
#
#   ./qemu-run.sh [KERNEL ARGS...]     e.g. ./qemu-run.sh loglevel=debug bench=1
#   KVM=1 ./qemu-run.sh                use KVM (needs nested virtualization on the host)
#
# Exit status: 33 = the hypervisor reported success, 35 = failure (isa-debug-exit).
# Ctrl-A X quits QEMU.
set -euo pipefail

cd "$(dirname "$0")"
kernel=target/x86_64-unknown-none/release/hv-multiboot
if [[ ! -f $kernel ]]; then
    echo "no $kernel: run 'cargo xtask build' first" >&2
    exit 1
fi

if [[ ${KVM:-0} == 1 ]]; then
    accel=(-enable-kvm -cpu host)
else
    accel=(-cpu qemu64,+svm,+npt) # TCG emulates SVM with nested paging (not VMX)
fi

exec qemu-system-x86_64 \
    "${accel[@]}" \
    -m 256 \
    -no-reboot \
    -display none \
    -nic none \
    -serial mon:stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$kernel" \
    -append "$*"
