//! `alipay.offline.material.image.upload`: format, size and dimension checks, and
//! the images a template may name.

use super::*;

pub(super) fn image_upload(shared: &Shared, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let image_type = inc
        .get("image_type")
        .ok_or_else(|| Fail::business("INVALID_PARAM", "image_type is required"))?
        .to_string();
    let image_name = inc
        .get("image_name")
        .ok_or_else(|| Fail::business("INVALID_PARAM", "image_name is required"))?
        .to_string();
    max_len("image_type", &image_type, 8)?;
    max_len("image_name", &image_name, 128)?;
    let bytes = inc.files.get("image_content").ok_or_else(|| {
        Fail::invalid(
            "isv.upload-fail",
            "no image_content file part in the multipart body",
        )
    })?;
    let declared = image_type.to_ascii_lowercase();
    let declared = match declared.as_str() {
        "jpg" | "jpeg" => "jpeg",
        "png" | "gif" | "bmp" => declared.as_str(),
        _ => {
            return Err(Fail::invalid(
                "isv.invalid-file-extension",
                format!("image_type `{image_type}` is not one of bmp, png, jpg, jpeg, gif"),
            ));
        }
    }
    .to_string();
    if bytes.len() > IMAGE_UPLOAD_MAX {
        return Err(Fail::invalid(
            "isv.invalid-file-size",
            format!(
                "the image is {} bytes; at most {IMAGE_UPLOAD_MAX}",
                bytes.len()
            ),
        ));
    }
    let actual = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => "png",
        Ok(imagesize::ImageType::Jpeg) => "jpeg",
        Ok(imagesize::ImageType::Gif) => "gif",
        Ok(imagesize::ImageType::Bmp) => "bmp",
        _ => {
            return Err(Fail::invalid(
                "isv.invalid-file-extension",
                "the file is not a BMP, PNG, JPEG or GIF image",
            ));
        }
    };
    if actual != declared {
        return Err(Fail::invalid(
            "isv.invalid-file-extension",
            format!("image_type says {image_type} but the file is {actual}"),
        ));
    }
    let size = imagesize::blob_size(bytes)
        .map_err(|_| Fail::invalid("isv.upload-fail", "the image header is unreadable"))?;
    let image_id = uuid::Uuid::new_v4().simple().to_string();
    let rec = ImageRec {
        ns: ns.to_string(),
        image_id: image_id.clone(),
        image_type,
        image_name,
        format: actual.into(),
        width: size.width,
        height: size.height,
        size: bytes.len(),
    };
    store::put(&shared.store.images, &image_id, &rec)?;
    shared
        .store
        .image_bytes
        .insert(image_id.as_bytes(), bytes.to_vec())
        .map_err(Fail::internal)?;
    Ok(success(&ImageUploadResponse {
        image_url: format!("{}/images/{image_id}", shared.base_url),
        image_id,
    }))
}

/// Check a referenced image: it exists for this merchant and fits its role.
pub(super) fn check_image(st: &Store, ns: &str, field: &str, id: &str) -> Result<(), Fail> {
    let rec: ImageRec = store::get(&st.images, id)?
        .filter(|r: &ImageRec| r.ns == ns)
        .ok_or_else(|| bad(field, format!("image `{id}` does not exist")))?;
    let (min_w, min_h, max_bytes) = match field {
        "template_style_info.background_id" => (1020, 643, 2 * 1024 * 1024),
        "template_style_info.logo_id" => (500, 500, 1024 * 1024),
        _ => (0, 0, 1024 * 1024),
    };
    if rec.width < min_w || rec.height < min_h {
        return Err(bad(
            field,
            format!(
                "image `{id}` is {}x{}; this role needs at least {min_w}x{min_h}",
                rec.width, rec.height
            ),
        ));
    }
    if rec.size > max_bytes {
        return Err(bad(
            field,
            format!(
                "image `{id}` is {} bytes; this role allows at most {max_bytes}",
                rec.size
            ),
        ));
    }
    Ok(())
}
