//! The `png` display: flushed scanouts as PNG files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::{Display, DisplayError, Frame};

/// Writes every frame (`scanout<N>-<seq>.png`), or keeps the last frame of each scanout and
/// writes it as `scanout<N>.png` on [`Display::finish`] (or drop).
pub struct PngDisplay {
    dir: PathBuf,
    every: bool,
    seq: u64,
    last: BTreeMap<u32, (u32, u32, Vec<u8>)>,
}

impl PngDisplay {
    pub fn every_frame(dir: &Path) -> Result<Self, DisplayError> {
        Self::new(dir, true)
    }

    pub fn last_frame(dir: &Path) -> Result<Self, DisplayError> {
        Self::new(dir, false)
    }

    fn new(dir: &Path, every: bool) -> Result<Self, DisplayError> {
        std::fs::create_dir_all(dir).map_err(|source| DisplayError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            every,
            seq: 0,
            last: BTreeMap::new(),
        })
    }

    /// Path of the `seq`-th frame of `scanout` in every-frame mode (1-based).
    pub fn frame_path(dir: &Path, scanout: u32, seq: u64) -> PathBuf {
        dir.join(format!("scanout{scanout}-{seq:06}.png"))
    }

    /// Path of the last frame of `scanout` in last-frame mode.
    pub fn last_path(dir: &Path, scanout: u32) -> PathBuf {
        dir.join(format!("scanout{scanout}.png"))
    }
}

/// Writes tightly packed RGBA8 pixels as a PNG file.
pub fn write_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<(), DisplayError> {
    let io = |source| DisplayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut enc = png::Encoder::new(BufWriter::new(file), width, height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header()?;
    w.write_image_data(rgba)?;
    w.finish()?;
    Ok(())
}

/// Reads a PNG file as RGBA8 (for tests that check captures): `(width, height, pixels)`.
pub fn read_png(path: &Path) -> Result<(u32, u32, Vec<u8>), DisplayError> {
    let file = File::open(path).map_err(|source| DisplayError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::ALPHA | png::Transformations::EXPAND);
    let mut reader = dec
        .read_info()
        .map_err(|e| DisplayError::Decode(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| DisplayError::Decode("image too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| DisplayError::Decode(e.to_string()))?;
    buf.truncate(info.buffer_size());
    Ok((info.width, info.height, buf))
}

impl Display for PngDisplay {
    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError> {
        let rgba = frame.to_rgba8()?;
        if self.every {
            self.seq += 1;
            write_png(
                &Self::frame_path(&self.dir, scanout, self.seq),
                frame.width,
                frame.height,
                &rgba,
            )
        } else {
            self.last.insert(scanout, (frame.width, frame.height, rgba));
            Ok(())
        }
    }

    fn finish(&mut self) -> Result<(), DisplayError> {
        for (scanout, (w, h, rgba)) in std::mem::take(&mut self.last) {
            write_png(&Self::last_path(&self.dir, scanout), w, h, &rgba)?;
        }
        Ok(())
    }
}

impl Drop for PngDisplay {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            warn!("png display: {e}");
        }
    }
}
