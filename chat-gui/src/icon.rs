//! The window icon: `assets/crust-chat.svg` rendered at 64×64 and stored
//! as raw RGBA (`assets/icons/crust-chat-64.rgba`, made with
//! `rsvg-convert` and `pngtopam`; see `assets/README.md`), so no image
//! decoder is needed at run time.

const SIDE: u32 = 64;
const RGBA: &[u8] = include_bytes!("../../assets/icons/crust-chat-64.rgba");

/// The app icon for the window.
pub fn window_icon() -> egui::IconData {
    egui::IconData {
        rgba: RGBA.to_vec(),
        width: SIDE,
        height: SIDE,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_icon_is_a_full_square_with_transparent_corners() {
        let icon = super::window_icon();
        assert_eq!(icon.rgba.len(), (icon.width * icon.height * 4) as usize);
        // Rounded corners: the top-left pixel is transparent, the centre opaque.
        assert_eq!(icon.rgba[3], 0);
        let centre = ((32 * 64 + 32) * 4 + 3) as usize;
        assert_eq!(icon.rgba[centre], 255);
    }
}
