//! Where flushed scanouts go: nowhere (`none`), PNG files (`png:<dir>`, `png-last:<dir>`) or a
//! Vulkan presenter (`window`, cargo feature `window`).

mod png_file;
pub mod qemu;
#[cfg(feature = "window")]
pub mod vulkan;

use std::path::PathBuf;
use std::str::FromStr;

pub use png_file::{read_png, write_png, PngDisplay};

use crate::protocol::format;

/// Why a display could not be created or could not show a frame.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("unknown display {0:?} (expected none, png:<dir>, png-last:<dir> or window)")]
    Spec(String),
    #[error("the window display needs virtio-gpu built with the `window` feature")]
    WindowNotBuilt,
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    #[error("PNG decoding failed: {0}")]
    Decode(String),
    #[error("unsupported pixel format {0}")]
    Format(u32),
    #[error("Vulkan: {0}")]
    Vulkan(String),
}

/// One flushed scanout: the visible rectangle of its resource, in the resource's format.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: u32,
    pub height: u32,
    /// Bytes per row of `data`.
    pub stride: u32,
    /// A virtio-gpu format ([`crate::protocol::format`]).
    pub format: u32,
    pub data: &'a [u8],
}

impl Frame<'_> {
    /// The frame as tightly packed RGBA8 (opaque where the format has no alpha).
    pub fn to_rgba8(&self) -> Result<Vec<u8>, DisplayError> {
        let (rgb, a) =
            format::rgba_offsets(self.format).ok_or(DisplayError::Format(self.format))?;
        let (w, h, stride) = (
            self.width as usize,
            self.height as usize,
            self.stride as usize,
        );
        let mut out = Vec::with_capacity(w * h * 4);
        for y in 0..h {
            let row = self
                .data
                .get(y * stride..y * stride + w * 4)
                .ok_or(DisplayError::Format(self.format))?;
            for px in row.chunks_exact(4) {
                out.extend_from_slice(&[
                    px[rgb[0]],
                    px[rgb[1]],
                    px[rgb[2]],
                    a.map_or(0xff, |i| px[i]),
                ]);
            }
        }
        Ok(out)
    }
}

/// A display backend. Runs on the device's thread.
pub trait Display {
    /// Whether frames are consumed at all; `false` lets the device skip reading pixels back.
    fn wants_frames(&self) -> bool {
        true
    }

    /// Shows a flushed scanout.
    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError>;

    /// The cursor moved (or was hidden: `visible == false`).
    fn cursor(&mut self, _scanout: u32, _x: u32, _y: u32, _visible: bool) {}

    /// The VM is stopping: write out whatever is buffered.
    fn finish(&mut self) -> Result<(), DisplayError> {
        Ok(())
    }
}

/// Discards every frame.
#[derive(Debug, Default)]
pub struct NoDisplay;

impl Display for NoDisplay {
    fn wants_frames(&self) -> bool {
        false
    }

    fn present(&mut self, _scanout: u32, _frame: &Frame<'_>) -> Result<(), DisplayError> {
        Ok(())
    }
}

/// A `--display` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplaySpec {
    /// `none`
    None,
    /// `png:<dir>`: every flushed frame as `<dir>/scanout<N>-<seq>.png`.
    Png(PathBuf),
    /// `png-last:<dir>`: the last frame of each scanout as `<dir>/scanout<N>.png` on exit.
    PngLast(PathBuf),
    /// `window`: a Vulkan presenter.
    Window,
}

impl FromStr for DisplaySpec {
    type Err = DisplayError;

    fn from_str(s: &str) -> Result<Self, DisplayError> {
        match s {
            "none" => return Ok(DisplaySpec::None),
            "window" => return Ok(DisplaySpec::Window),
            _ => {}
        }
        if let Some(dir) = s.strip_prefix("png:").filter(|d| !d.is_empty()) {
            return Ok(DisplaySpec::Png(dir.into()));
        }
        if let Some(dir) = s.strip_prefix("png-last:").filter(|d| !d.is_empty()) {
            return Ok(DisplaySpec::PngLast(dir.into()));
        }
        Err(DisplayError::Spec(s.to_string()))
    }
}

impl DisplaySpec {
    /// Creates the display (call it on the thread that will use it).
    pub fn open(&self) -> Result<Box<dyn Display>, DisplayError> {
        Ok(match self {
            DisplaySpec::None => Box::new(NoDisplay),
            DisplaySpec::Png(dir) => Box::new(PngDisplay::every_frame(dir)?),
            DisplaySpec::PngLast(dir) => Box::new(PngDisplay::last_frame(dir)?),
            #[cfg(feature = "window")]
            DisplaySpec::Window => Box::new(vulkan::VulkanDisplay::new()?),
            #[cfg(not(feature = "window"))]
            DisplaySpec::Window => return Err(DisplayError::WindowNotBuilt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("none".parse::<DisplaySpec>().ok(), Some(DisplaySpec::None));
        assert_eq!(
            "png:/tmp/x".parse::<DisplaySpec>().ok(),
            Some(DisplaySpec::Png("/tmp/x".into()))
        );
        assert_eq!(
            "png-last:out".parse::<DisplaySpec>().ok(),
            Some(DisplaySpec::PngLast("out".into()))
        );
        assert!("png:".parse::<DisplaySpec>().is_err());
        assert!("vnc".parse::<DisplaySpec>().is_err());
    }

    #[test]
    fn frames_convert_to_rgba() {
        let data = [1, 2, 3, 4, 9, 9, 9, 9, 5, 6, 7, 8, 9, 9, 9, 9];
        let f = Frame {
            width: 1,
            height: 2,
            stride: 8,
            format: format::B8G8R8X8_UNORM,
            data: &data,
        };
        assert_eq!(f.to_rgba8().unwrap(), vec![3, 2, 1, 255, 7, 6, 5, 255]);
        let f = Frame {
            format: format::A8B8G8R8_UNORM,
            ..f
        };
        assert_eq!(f.to_rgba8().unwrap(), vec![4, 3, 2, 1, 8, 7, 6, 5]);
        let f = Frame { format: 999, ..f };
        assert!(f.to_rgba8().is_err());
    }
}
