//! KVM state: the VM (memory slots, irqchip, PIT, irqfd/ioeventfd) and the vCPUs.

pub mod vcpu;
pub mod vm;
