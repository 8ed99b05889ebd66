//! vcuda's virtual machine monitor.
