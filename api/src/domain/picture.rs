//! Pictures, checked by their content.
//!
//! [`Picture::parse`] is the only way to get a [`Picture`]: it sniffs the format from the
//! bytes (never the file name or the claimed type), accepts JPEG, PNG, WebP and GIF,
//! refuses anything larger than the limits before decoding it (the header gives the
//! dimensions, so a decompression bomb is refused unopened), decodes the whole picture
//! (a truncated file fails), removes the metadata (GPS included; see [`super::metadata`])
//! and makes the thumbnail, turned upright as the EXIF orientation says. It is CPU work:
//! call it off the async runtime.

use std::fmt;
use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, Limits};
use sha2::{Digest as _, Sha256};

use super::metadata::{self, Stripped};
use crate::error::ServiceError;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;

/// What a picture may be.
#[derive(Clone, Copy, Debug)]
pub struct PictureLimits {
    /// Largest file, in bytes.
    pub max_bytes: usize,
    /// Longest side, in pixels.
    pub max_side: u32,
    /// Most files one request may carry.
    pub max_files: usize,
    /// Most bytes (pictures and thumbnails) one partner's live products may show.
    pub quota_bytes: u64,
}

impl Default for PictureLimits {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024,
            max_side: 4096,
            max_files: 4,
            quota_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A checked, decodable picture with its thumbnail.
#[derive(Clone)]
pub struct Picture {
    /// SHA-256 of `bytes`, lower-case hex: the picture's identity and file name.
    pub hash: String,
    pub content_type: &'static str,
    pub ext: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
    /// A JPEG at most [`THUMBNAIL_SIDE`] pixels on its longer side.
    pub thumbnail: Vec<u8>,
}

impl fmt::Debug for Picture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picture")
            .field("hash", &self.hash)
            .field("content_type", &self.content_type)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

pub const THUMBNAIL_CONTENT_TYPE: &str = "image/jpeg";
pub const THUMBNAIL_EXT: &str = "jpg";

/// The file extensions pictures are stored under, with their content types.
const KINDS: [(&str, &str); 4] = [
    ("jpg", "image/jpeg"),
    ("png", "image/png"),
    ("webp", "image/webp"),
    ("gif", "image/gif"),
];

/// The content type of a stored picture's extension, for the URLs we hand out.
pub fn content_type_of_ext(ext: &str) -> Option<&'static str> {
    kind_of_ext(ext).map(|(_, content_type)| content_type)
}

/// A stored picture's extension and content type, as static strings.
pub fn kind_of_ext(ext: &str) -> Option<(&'static str, &'static str)> {
    KINDS.into_iter().find(|(known, _)| *known == ext)
}

impl Picture {
    pub fn parse(
        field: &str,
        bytes: Vec<u8>,
        limits: &PictureLimits,
    ) -> Result<Self, ServiceError> {
        let invalid = |message: String| ServiceError::invalid(field, message);
        if bytes.is_empty() {
            return Err(invalid("is empty".to_owned()));
        }
        if bytes.len() > limits.max_bytes {
            return Err(invalid(format!(
                "is larger than the limit of {} bytes ({} MiB)",
                limits.max_bytes,
                limits.max_bytes / (1024 * 1024)
            )));
        }
        let not_a_picture = || invalid("is not a JPEG, PNG, WebP or GIF picture".to_owned());
        let format = image::guess_format(&bytes).map_err(|_| not_a_picture())?;
        let (content_type, ext) = match format {
            ImageFormat::Jpeg => ("image/jpeg", "jpg"),
            ImageFormat::Png => ("image/png", "png"),
            ImageFormat::WebP => ("image/webp", "webp"),
            ImageFormat::Gif => ("image/gif", "gif"),
            _ => return Err(not_a_picture()),
        };

        // What is stored is the picture without its metadata (GPS above all); the
        // orientation it gave turns the thumbnail (`metadata`).
        let Stripped { bytes, orientation } = metadata::strip(format, bytes);
        let reader = || ImageReader::with_format(Cursor::new(bytes.as_slice()), format);
        let too_large = |w: u32, h: u32| {
            invalid(format!(
                "is {w}×{h} pixels; the limit is {} pixels per side",
                limits.max_side
            ))
        };
        let (width, height) = reader()
            .into_dimensions()
            .map_err(|_| invalid(format!("is not a valid {} file", ext.to_uppercase())))?;
        if width > limits.max_side || height > limits.max_side {
            return Err(too_large(width, height));
        }
        if width == 0 || height == 0 {
            return Err(invalid("has no pixels".to_owned()));
        }
        // The decoder enforces the same bounds itself, in case a format's header and
        // data disagree: room for the largest allowed picture as RGBA16, and no more.
        let mut decoder = reader();
        let mut decode_limits = Limits::default();
        decode_limits.max_image_width = Some(limits.max_side);
        decode_limits.max_image_height = Some(limits.max_side);
        decode_limits.max_alloc = Some(u64::from(limits.max_side).pow(2) * 8);
        decoder.limits(decode_limits);
        let mut decoded = decoder.decode().map_err(|err| match err {
            image::ImageError::Limits(_) => too_large(width, height),
            _ => invalid(format!(
                "could not be decoded as {} (truncated or corrupt)",
                ext.to_uppercase()
            )),
        })?;

        // Upright, as a viewer sees it: the size reported is the turned one too.
        decoded.apply_orientation(orientation);
        let (width, height) = (decoded.width(), decoded.height());
        let thumbnail = make_thumbnail(&decoded).map_err(|e| ServiceError::Internal(e.into()))?;
        let hash = format!("{:x}", Sha256::digest(&bytes));
        Ok(Self {
            hash,
            content_type,
            ext,
            width,
            height,
            bytes,
            thumbnail,
        })
    }
}

/// A JPEG thumbnail; transparency is flattened onto white, as JPEG has none.
fn make_thumbnail(image: &image::DynamicImage) -> image::ImageResult<Vec<u8>> {
    let small = image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE).to_rgba8();
    let mut flat = image::RgbImage::new(small.width(), small.height());
    for (x, y, pixel) in small.enumerate_pixels() {
        let [r, g, b, a] = pixel.0;
        let blend = |c: u8| -> u8 {
            let (c, a) = (u32::from(c), u32::from(a));
            u8::try_from((c * a + 255 * (255 - a)) / 255).unwrap_or(255)
        };
        flat.put_pixel(x, y, image::Rgb([blend(r), blend(g), blend(b)]));
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 80).encode_image(&flat)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(width, height, image::Rgba([200, 10, 10, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_png_is_accepted_hashed_and_thumbnailed() {
        let picture = Picture::parse("image", png(600, 300), &PictureLimits::default()).unwrap();
        assert_eq!(picture.content_type, "image/png");
        assert_eq!((picture.width, picture.height), (600, 300));
        assert_eq!(picture.hash.len(), 64);
        let thumb = image::load_from_memory(&picture.thumbnail).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (256, 128));
    }

    /// A 64×32 picture in `format` carrying a phone's EXIF (orientation 6: rotate 90°
    /// clockwise to show it upright) and, in PNG, a text chunk.
    fn phone_photo(format: ImageFormat) -> Vec<u8> {
        use img_parts::ImageEXIF as _;
        let img = image::RgbImage::from_pixel(64, 32, image::Rgb([10, 120, 200]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        let plain = img_parts::Bytes::from(out.into_inner());
        let exif = Some(img_parts::Bytes::from(super::metadata::tests::phone_exif(
            6,
        )));
        match format {
            ImageFormat::Jpeg => {
                let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(plain).unwrap();
                jpeg.set_exif(exif);
                jpeg.encoder().bytes().to_vec()
            }
            ImageFormat::Png => {
                let mut png = img_parts::png::Png::from_bytes(plain).unwrap();
                png.set_exif(exif);
                let text = img_parts::Bytes::from_static(b"Comment\0SecretText");
                let at = png.chunks().len() - 1;
                png.chunks_mut()
                    .insert(at, img_parts::png::PngChunk::new(*b"tEXt", text));
                png.encoder().bytes().to_vec()
            }
            _ => {
                let mut webp = img_parts::webp::WebP::from_bytes(plain).unwrap();
                webp.set_exif(exif);
                webp.encoder().bytes().to_vec()
            }
        }
    }

    #[test]
    fn a_phone_photo_is_stored_without_its_metadata_and_thumbnailed_upright() {
        let contains =
            |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let photo = phone_photo(format);
            assert!(
                contains(&photo, b"SecretPhone"),
                "{format:?}: the test photo has EXIF"
            );
            let picture = Picture::parse("image", photo, &PictureLimits::default()).unwrap();
            for secret in [&b"SecretPhone"[..], b"SecretText", b"S\0\0\0"] {
                assert!(
                    !contains(&picture.bytes, secret),
                    "{format:?}: {secret:?} kept"
                );
            }
            // The orientation alone is written back, so a browser still turns it.
            let stripped = super::metadata::strip(format, picture.bytes.clone());
            assert_eq!(
                stripped.orientation,
                image::metadata::Orientation::Rotate90,
                "{format:?}"
            );
            assert_eq!(
                stripped.bytes, picture.bytes,
                "{format:?}: stripping twice changes nothing"
            );
            // Upright: 32 wide, 64 high, and so is the thumbnail.
            assert_eq!((picture.width, picture.height), (32, 64), "{format:?}");
            let thumb = image::load_from_memory(&picture.thumbnail).unwrap();
            assert!(
                thumb.height() > thumb.width(),
                "{format:?}: {}×{}",
                thumb.width(),
                thumb.height()
            );
            // The stored file is still the same picture, and its identity is its bytes.
            assert!(
                image::load_from_memory(&picture.bytes).is_ok(),
                "{format:?}"
            );
            assert_eq!(
                picture.hash,
                format!("{:x}", Sha256::digest(&picture.bytes))
            );
        }
    }

    #[test]
    fn content_not_names_decides() {
        let limits = PictureLimits::default();
        let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
        exe.extend(vec![0u8; 100]);
        assert!(Picture::parse("image", exe, &limits).is_err());
        let svg =
            br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
        assert!(Picture::parse("image", svg, &limits).is_err());
        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(Picture::parse("image", truncated, &limits).is_err());
    }

    #[test]
    fn limits_are_enforced_before_decoding() {
        let limits = PictureLimits {
            max_bytes: 1024 * 1024,
            max_side: 100,
            max_files: 1,
            ..PictureLimits::default()
        };
        match Picture::parse("image", png(101, 10), &limits) {
            Err(ServiceError::Invalid { message, .. }) => {
                assert!(message.contains("100 pixels"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let small = PictureLimits {
            max_bytes: 10,
            ..limits
        };
        assert!(Picture::parse("image", png(5, 5), &small).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A picture damaged anywhere (header, size fields, pixel data) is either still
        /// a picture within the limits or a named invalid-input error; never a panic.
        #[test]
        fn damaged_pictures_are_refused_cleanly(
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..8),
            cut in proptest::option::of(0usize..4096),
        ) {
            let mut bytes = png(40, 30);
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            let limits = PictureLimits::default();
            match Picture::parse("image", bytes, &limits) {
                Ok(picture) => {
                    proptest::prop_assert!(picture.width <= limits.max_side);
                    proptest::prop_assert!(picture.height <= limits.max_side);
                }
                Err(ServiceError::Invalid { field, .. }) => proptest::prop_assert_eq!(field, "image"),
                Err(other) => proptest::prop_assert!(false, "not an invalid-input error: {other:?}"),
            }
        }
    }
}
