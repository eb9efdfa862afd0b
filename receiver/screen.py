"""The receiver's window on the screen: a picture, the keys typed into it, and whether it is open.

Two toolkits draw it, both driven from the synthesis thread that created the window:

- `TkScreen` (Python's own tkinter, Tk 8.6), used when tkinter is present.  Tk reads X
  events on the thread that draws, so a window cannot miss its own mapping.
- `CvScreen` (OpenCV's HighGUI, Qt 5 in the opencv-python wheel), the fallback.  Its
  window can stay black for good: Qt 5's separate X event reader loses the window's
  MapNotify now and then when other X clients are busy as the window maps (seen about one
  time in six in the receiver-window test on Xvfb; opencv/opencv-python#362 reports the same
  black window on desktops), and Qt paints only windows it knows to be mapped.

`open_screen` picks one.  Keys come back as characters ("q", "d", ...) and "Escape".
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class ScreenError(RuntimeError):
    """No window can be shown (no display, or the toolkit failed)."""


class TkScreen:
    """A Tk window with the picture as a label's image; closing it is noticed by `poll`."""

    def __init__(self, title: str) -> None:
        import tkinter

        self._tk = tkinter
        try:
            self._root = tkinter.Tk(className=title)
        except tkinter.TclError as exc:
            raise ScreenError(str(exc)) from None
        self._root.title(title)
        # where no window manager places it (a bare X server, as the tests run), put it in the corner
        self._root.geometry("+0+0")
        self._label = tkinter.Label(self._root, borderwidth=0, highlightthickness=0)
        self._label.pack()
        self._photo = None
        self._keys: list[str] = []
        self._open = True
        self._root.bind("<Key>", self._typed)
        self._root.protocol("WM_DELETE_WINDOW", self._closed)

    def _typed(self, event) -> None:
        self._keys.append("Escape" if event.keysym == "Escape" else event.char)

    def _closed(self) -> None:
        self._open = False

    def show(self, picture: np.ndarray) -> None:
        h, w = picture.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(picture, np.uint8).tobytes()
        try:
            self._photo = self._tk.PhotoImage(master=self._root, data=ppm, format="PPM")
            self._label.configure(image=self._photo)
        except self._tk.TclError as exc:
            raise ScreenError(str(exc)) from None

    def poll(self) -> tuple[bool, list[str]]:
        """Handle the window's events; (still open, keys typed since the last poll)."""
        try:
            self._root.update()
        except self._tk.TclError:
            self._open = False
        keys, self._keys = self._keys, []
        return self._open, keys

    def close(self) -> None:
        try:
            self._root.destroy()
        except self._tk.TclError:
            pass
        self._photo = self._label = self._root = None     # Tk objects die on the thread that made them


class CvScreen:
    """An OpenCV (Qt) window; see the module docstring for why it is only the fallback."""

    def __init__(self, title: str) -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
            cv2.moveWindow(title, 0, 0)
        except cv2.error as exc:
            raise ScreenError(str(exc).strip().splitlines()[-1]) from None

    def show(self, picture: np.ndarray) -> None:
        cv2 = self._cv2
        try:
            cv2.imshow(self.title, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        except cv2.error as exc:
            raise ScreenError(str(exc).strip().splitlines()[-1]) from None

    def poll(self) -> tuple[bool, list[str]]:
        cv2 = self._cv2
        key = cv2.waitKey(1) & 0xFF
        keys = [] if key == 0xFF else ["Escape" if key == 27 else chr(key)]
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1, keys
        except cv2.error:
            return False, keys

    def close(self) -> None:
        try:
            self._cv2.destroyWindow(self.title)
            self._cv2.waitKey(1)
        except self._cv2.error:
            pass


Screen = TkScreen | CvScreen


def open_screen(title: str) -> Screen:
    """A window titled `title`: Tk's when tkinter is present, OpenCV's otherwise."""
    try:
        import tkinter  # noqa: F401
    except ImportError:
        log.info("tkinter is not installed (Debian: python3-tk): the window is OpenCV's, which can "
                 "stay black on some X servers")
        return CvScreen(title)
    return TkScreen(title)

