"""The code points the preview font subset keeps (see README.md)."""
chars = set(range(0x20, 0x7F)) | set(range(0xA0, 0x100))
for lo, hi in [(0x2000, 0x206F), (0x20A0, 0x20BF), (0x2100, 0x214F), (0x2190, 0x21FF),
               (0x2460, 0x24FF), (0x25A0, 0x25FF), (0x2600, 0x26FF), (0x3000, 0x303F),
               (0xFF00, 0xFFEF)]:
    chars |= set(range(lo, hi))
for hi in range(0xA1, 0xF8):
    for lo in range(0xA1, 0xFF):
        try:
            chars.add(ord(bytes([hi, lo]).decode("gb2312")))
        except UnicodeDecodeError:
            pass
print("\n".join("U+%04X" % c for c in sorted(chars)))
