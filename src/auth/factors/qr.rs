//! A QR code as inline SVG (no image files, no scripts: the pages' CSP allows it).

use qrcodegen::{QrCode, QrCodeEcc};

/// `text` as an SVG QR code with a 4-module quiet zone, labelled for screen readers.
pub fn svg(text: &str, label: &str) -> Option<String> {
    let qr = QrCode::encode_text(text, QrCodeEcc::Medium).ok()?;
    let border = 4;
    let size = qr.size() + border * 2;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"220\" height=\"220\" role=\"img\" aria-label=\"{label}\" shape-rendering=\"crispEdges\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>",
        label = super::super::pages::escape(label)
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_svg_with_modules() {
        let s = super::svg("otpauth://totp/a:b?secret=AAAA", "QR <code>").unwrap_or_default();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("aria-label=\"QR &lt;code&gt;\""));
        assert!(s.matches('M').count() > 50);
    }
}
