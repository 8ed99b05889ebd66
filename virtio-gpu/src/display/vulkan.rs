//! The `window` display: a Vulkan presenter on vulkano (cargo feature `window`).
//!
//! Each flushed scanout is uploaded to a staging buffer, copied into a source image and blitted
//! (scaled, format-converted) onto the target: a swapchain image on a `VK_EXT_headless_surface`
//! surface, or an offscreen image that tests read back. Works on any Vulkan 1.x device,
//! including Mesa's lavapipe (software) and real GPUs. An on-screen window needs a windowing
//! surface (winit/Wayland/X11) in place of the headless one; see docs/GPU.md.

use std::sync::Arc;

use tracing::{debug, info};
use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::command_buffer::allocator::StandardCommandBufferAllocator;
use vulkano::command_buffer::{
    AutoCommandBufferBuilder, BlitImageInfo, CommandBufferUsage, CopyBufferToImageInfo,
    CopyImageToBufferInfo, PrimaryAutoCommandBuffer, PrimaryCommandBufferAbstract,
};
use vulkano::device::physical::PhysicalDevice;
use vulkano::device::{
    Device, DeviceCreateInfo, DeviceExtensions, Queue, QueueCreateInfo, QueueFlags,
};
use vulkano::format::Format;
use vulkano::image::sampler::Filter;
use vulkano::image::{Image, ImageCreateInfo, ImageType, ImageUsage};
use vulkano::instance::{Instance, InstanceCreateFlags, InstanceCreateInfo, InstanceExtensions};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter, StandardMemoryAllocator};
use vulkano::swapchain::{self, Surface, Swapchain, SwapchainCreateInfo, SwapchainPresentInfo};
use vulkano::sync::GpuFuture;
use vulkano::{Validated, VulkanLibrary};

use super::{Display, DisplayError, Frame};

/// Vulkan errors carry their detail (the failed validation rule) in `Debug`.
fn vk(e: impl std::fmt::Debug) -> DisplayError {
    DisplayError::Vulkan(format!("{e:?}"))
}

enum Target {
    Offscreen(Arc<Image>),
    Swapchain {
        swapchain: Arc<Swapchain>,
        images: Vec<Arc<Image>>,
    },
}

/// A Vulkan device and a presentation target of a fixed size.
pub struct VulkanPresenter {
    device: Arc<Device>,
    queue: Arc<Queue>,
    mem: Arc<StandardMemoryAllocator>,
    cmd: Arc<StandardCommandBufferAllocator>,
    target: Target,
    size: [u32; 2],
}

/// Picks the first device with a graphics queue (blits need one); lavapipe qualifies.
fn pick(instance: &Arc<Instance>) -> Result<(Arc<PhysicalDevice>, u32), DisplayError> {
    instance
        .enumerate_physical_devices()
        .map_err(vk)?
        .find_map(|pd| {
            pd.queue_family_properties()
                .iter()
                .position(|q| q.queue_flags.intersects(QueueFlags::GRAPHICS))
                .map(|i| (pd.clone(), i as u32))
        })
        .ok_or_else(|| DisplayError::Vulkan("no Vulkan device with a graphics queue".into()))
}

impl VulkanPresenter {
    fn instance(headless_surface: bool) -> Result<Arc<Instance>, DisplayError> {
        let library = VulkanLibrary::new().map_err(vk)?;
        let mut ext = InstanceExtensions::empty();
        if headless_surface {
            ext.khr_surface = true;
            ext.ext_headless_surface = true;
        }
        Instance::new(
            library,
            InstanceCreateInfo {
                flags: InstanceCreateFlags::ENUMERATE_PORTABILITY,
                enabled_extensions: ext,
                ..Default::default()
            },
        )
        .map_err(vk)
    }

    fn open(
        instance: &Arc<Instance>,
        swapchain: bool,
    ) -> Result<(Arc<Device>, Arc<Queue>), DisplayError> {
        let (pd, family) = pick(instance)?;
        info!(
            "vulkan presenter on {} ({:?})",
            pd.properties().device_name,
            pd.properties().device_type
        );
        let (device, mut queues) = Device::new(
            pd,
            DeviceCreateInfo {
                queue_create_infos: vec![QueueCreateInfo {
                    queue_family_index: family,
                    ..Default::default()
                }],
                enabled_extensions: DeviceExtensions {
                    khr_swapchain: swapchain,
                    ..DeviceExtensions::empty()
                },
                ..Default::default()
            },
        )
        .map_err(vk)?;
        let queue = queues
            .next()
            .ok_or_else(|| DisplayError::Vulkan("device has no queue".into()))?;
        Ok((device, queue))
    }

    fn with_target(
        device: Arc<Device>,
        queue: Arc<Queue>,
        size: [u32; 2],
        make: impl FnOnce(&Arc<StandardMemoryAllocator>) -> Result<Target, DisplayError>,
    ) -> Result<Self, DisplayError> {
        let mem = Arc::new(StandardMemoryAllocator::new_default(device.clone()));
        let cmd = Arc::new(StandardCommandBufferAllocator::new(
            device.clone(),
            Default::default(),
        ));
        let target = make(&mem)?;
        Ok(Self {
            device,
            queue,
            mem,
            cmd,
            target,
            size,
        })
    }

    /// Renders into an offscreen `width`×`height` RGBA8 image (read it with [`Self::read_back`]).
    pub fn offscreen(width: u32, height: u32) -> Result<Self, DisplayError> {
        let instance = Self::instance(false)?;
        let (device, queue) = Self::open(&instance, false)?;
        Self::with_target(device, queue, [width, height], |mem| {
            Ok(Target::Offscreen(image(
                mem,
                Format::R8G8B8A8_UNORM,
                [width, height],
                ImageUsage::TRANSFER_DST | ImageUsage::TRANSFER_SRC,
            )?))
        })
    }

    /// Presents to a swapchain on a `VK_EXT_headless_surface` surface.
    pub fn headless_swapchain(width: u32, height: u32) -> Result<Self, DisplayError> {
        let instance = Self::instance(true)?;
        let (device, queue) = Self::open(&instance, true)?;
        let surface = Surface::headless(instance, None).map_err(vk)?;
        let pd = device.physical_device().clone();
        let caps = pd
            .surface_capabilities(&surface, Default::default())
            .map_err(vk)?;
        let formats = pd
            .surface_formats(&surface, Default::default())
            .map_err(vk)?;
        let (format, color_space) = formats
            .iter()
            .copied()
            .find(|(f, _)| *f == Format::B8G8R8A8_UNORM)
            .or_else(|| formats.first().copied())
            .ok_or_else(|| DisplayError::Vulkan("surface has no formats".into()))?;
        let composite_alpha = caps
            .supported_composite_alpha
            .into_iter()
            .next()
            .ok_or_else(|| DisplayError::Vulkan("no composite alpha mode".into()))?;
        let (swapchain, images) = Swapchain::new(
            device.clone(),
            surface,
            SwapchainCreateInfo {
                min_image_count: caps.min_image_count.max(2),
                image_format: format,
                image_color_space: color_space,
                image_extent: [width, height],
                image_usage: ImageUsage::TRANSFER_DST,
                composite_alpha,
                ..Default::default()
            },
        )
        .map_err(vk)?;
        Self::with_target(device, queue, [width, height], |_| {
            Ok(Target::Swapchain { swapchain, images })
        })
    }

    /// The Vulkan device's name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" for lavapipe).
    pub fn device_name(&self) -> String {
        self.device
            .physical_device()
            .properties()
            .device_name
            .clone()
    }

    pub fn size(&self) -> [u32; 2] {
        self.size
    }

    fn builder(&self) -> Result<AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>, DisplayError> {
        AutoCommandBufferBuilder::primary(
            self.cmd.clone(),
            self.queue.queue_family_index(),
            CommandBufferUsage::OneTimeSubmit,
        )
        .map_err(vk)
    }

    /// Uploads `frame` and blits it (nearest-neighbour scaled) onto the target.
    pub fn present(&mut self, frame: &Frame<'_>) -> Result<(), DisplayError> {
        let rgba = frame.to_rgba8()?;
        let staging = Buffer::from_iter(
            self.mem.clone(),
            BufferCreateInfo {
                usage: BufferUsage::TRANSFER_SRC,
                ..Default::default()
            },
            AllocationCreateInfo {
                memory_type_filter: MemoryTypeFilter::PREFER_HOST
                    | MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
                ..Default::default()
            },
            rgba,
        )
        .map_err(vk)?;
        let src = image(
            &self.mem,
            Format::R8G8B8A8_UNORM,
            [frame.width, frame.height],
            ImageUsage::TRANSFER_DST | ImageUsage::TRANSFER_SRC,
        )?;
        let mut b = self.builder()?;
        b.copy_buffer_to_image(CopyBufferToImageInfo::buffer_image(staging, src.clone()))
            .map_err(vk)?;
        match &self.target {
            Target::Offscreen(dst) => {
                b.blit_image(BlitImageInfo {
                    filter: Filter::Nearest,
                    ..BlitImageInfo::images(src, dst.clone())
                })
                .map_err(vk)?;
                let cb = b.build().map_err(vk)?;
                cb.execute(self.queue.clone())
                    .map_err(vk)?
                    .then_signal_fence_and_flush()
                    .map_err(vk)?
                    .wait(None)
                    .map_err(vk)?;
            }
            Target::Swapchain { swapchain, images } => {
                let (index, suboptimal, acquired) =
                    swapchain::acquire_next_image(swapchain.clone(), None)
                        .map_err(Validated::unwrap)
                        .map_err(vk)?;
                if suboptimal {
                    debug!("vulkan presenter: swapchain is suboptimal");
                }
                let dst = images
                    .get(index as usize)
                    .ok_or_else(|| DisplayError::Vulkan("bad swapchain image index".into()))?;
                b.blit_image(BlitImageInfo {
                    filter: Filter::Nearest,
                    ..BlitImageInfo::images(src, dst.clone())
                })
                .map_err(vk)?;
                let cb = b.build().map_err(vk)?;
                acquired
                    .then_execute(self.queue.clone(), cb)
                    .map_err(vk)?
                    .then_swapchain_present(
                        self.queue.clone(),
                        SwapchainPresentInfo::swapchain_image_index(swapchain.clone(), index),
                    )
                    .then_signal_fence_and_flush()
                    .map_err(vk)?
                    .wait(None)
                    .map_err(vk)?;
            }
        }
        Ok(())
    }

    /// The offscreen target's pixels, RGBA8 (only for [`Self::offscreen`] presenters).
    pub fn read_back(&self) -> Result<Vec<u8>, DisplayError> {
        let Target::Offscreen(img) = &self.target else {
            return Err(DisplayError::Vulkan(
                "swapchain images are not read back".into(),
            ));
        };
        let len = u64::from(self.size[0]) * u64::from(self.size[1]) * 4;
        let buf: Subbuffer<[u8]> = Buffer::new_slice(
            self.mem.clone(),
            BufferCreateInfo {
                usage: BufferUsage::TRANSFER_DST,
                ..Default::default()
            },
            AllocationCreateInfo {
                memory_type_filter: MemoryTypeFilter::PREFER_HOST
                    | MemoryTypeFilter::HOST_RANDOM_ACCESS,
                ..Default::default()
            },
            len,
        )
        .map_err(vk)?;
        let mut b = self.builder()?;
        b.copy_image_to_buffer(CopyImageToBufferInfo::image_buffer(
            img.clone(),
            buf.clone(),
        ))
        .map_err(vk)?;
        let cb = b.build().map_err(vk)?;
        cb.execute(self.queue.clone())
            .map_err(vk)?
            .then_signal_fence_and_flush()
            .map_err(vk)?
            .wait(None)
            .map_err(vk)?;
        let data = buf.read().map_err(vk)?;
        Ok(data.to_vec())
    }
}

fn image(
    mem: &Arc<StandardMemoryAllocator>,
    format: Format,
    [w, h]: [u32; 2],
    usage: ImageUsage,
) -> Result<Arc<Image>, DisplayError> {
    Image::new(
        mem.clone(),
        ImageCreateInfo {
            image_type: ImageType::Dim2d,
            format,
            extent: [w.max(1), h.max(1), 1],
            usage,
            ..Default::default()
        },
        AllocationCreateInfo::default(),
    )
    .map_err(vk)
}

/// The `window` display: one presenter per scanout, (re)created at the size of the frames.
#[derive(Default)]
pub struct VulkanDisplay {
    presenters: Vec<Option<VulkanPresenter>>,
}

impl VulkanDisplay {
    /// Checks that a Vulkan device exists (the presenters are created on the first frame).
    pub fn new() -> Result<Self, DisplayError> {
        let instance =
            VulkanPresenter::instance(true).or_else(|_| VulkanPresenter::instance(false))?;
        pick(&instance)?;
        Ok(Self::default())
    }
}

impl Display for VulkanDisplay {
    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError> {
        let i = scanout as usize;
        if self.presenters.len() <= i {
            self.presenters.resize_with(i + 1, || None);
        }
        let slot = &mut self.presenters[i];
        if slot
            .as_ref()
            .is_none_or(|p| p.size() != [frame.width, frame.height])
        {
            let (w, h) = (frame.width, frame.height);
            *slot = Some(match VulkanPresenter::headless_swapchain(w, h) {
                Ok(p) => p,
                Err(e) => {
                    debug!("vulkan presenter: no swapchain ({e}); rendering offscreen");
                    VulkanPresenter::offscreen(w, h)?
                }
            });
        }
        match slot {
            Some(p) => p.present(frame),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::format;

    /// A Vulkan presenter or the reason there is none (then the test is skipped).
    fn presenter(w: u32, h: u32) -> Option<VulkanPresenter> {
        match VulkanPresenter::offscreen(w, h) {
            Ok(p) => Some(p),
            Err(e) => {
                vcuda_testkit::skip(format!(
                    "no Vulkan device ({e}); install mesa-vulkan-drivers \
                     (scripts/setup-gpu.sh) for lavapipe"
                ));
                None
            }
        }
    }

    #[test]
    fn offscreen_frame_matches_pixel_by_pixel() {
        let (w, h) = (5u32, 3u32);
        let Some(mut p) = presenter(w * 2, h * 2) else {
            return;
        };
        eprintln!("vulkan device: {}", p.device_name());
        // B8G8R8X8 source with a 4-byte row padding.
        let stride = w * 4 + 4;
        let mut data = vec![0u8; (stride * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let i = (y * stride + x * 4) as usize;
                data[i..i + 4].copy_from_slice(&[(x * 40) as u8, (y * 80) as u8, 200, 0]);
            }
        }
        let frame = Frame {
            width: w,
            height: h,
            stride,
            format: format::B8G8R8X8_UNORM,
            data: &data,
        };
        p.present(&frame).unwrap();
        let got = p.read_back().unwrap();
        for y in 0..h * 2 {
            for x in 0..w * 2 {
                let i = ((y * w * 2 + x) * 4) as usize;
                let want = [200, ((y / 2) * 80) as u8, ((x / 2) * 40) as u8, 255];
                assert_eq!(&got[i..i + 4], &want, "pixel ({x},{y})");
            }
        }
    }

    #[test]
    fn window_display_presents_flushed_frames() {
        if presenter(1, 1).is_none() {
            return;
        }
        let mut d = VulkanDisplay::new().unwrap();
        let data = vec![0x40u8; 16 * 8 * 4];
        let frame = Frame {
            width: 16,
            height: 8,
            stride: 64,
            format: format::X8B8G8R8_UNORM,
            data: &data,
        };
        d.present(0, &frame).unwrap();
        d.present(0, &frame).unwrap();
        d.present(
            1,
            &Frame {
                width: 8,
                stride: 64,
                ..frame
            },
        )
        .unwrap();
    }

    #[test]
    fn headless_swapchain_presents_frames() {
        if presenter(1, 1).is_none() {
            return;
        }
        let mut p = match VulkanPresenter::headless_swapchain(64, 32) {
            Ok(p) => p,
            Err(e) => {
                vcuda_testkit::skip(format!("no VK_EXT_headless_surface swapchain: {e:?}"));
                return;
            }
        };
        let data = vec![0x80u8; 64 * 32 * 4];
        let frame = Frame {
            width: 64,
            height: 32,
            stride: 256,
            format: format::R8G8B8A8_UNORM,
            data: &data,
        };
        for _ in 0..3 {
            p.present(&frame).unwrap();
        }
    }
}
