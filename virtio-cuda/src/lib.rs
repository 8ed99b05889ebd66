//! virtio-cuda
