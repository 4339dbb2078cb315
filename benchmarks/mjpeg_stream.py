"""A live camera that can stall: MJPEG over HTTP on 127.0.0.1, or through a FIFO.

Network cameras and ``ffmpeg ... -f mpjpeg`` pipes send ``multipart/x-mixed-replace``
JPEG frames. Both stand-ins here send the frames of a folder (real FER2013 faces composited
into 640x480 frames by :func:`benchmarks.harness.make_clip`) at a steady rate, and
:meth:`pause` makes them stop sending while keeping every connection open: the fault a
reader blocked inside ``cv2.VideoCapture.read()`` meets on real hardware.
"""

from __future__ import annotations

import errno
import http.server
import os
import threading
import time
from pathlib import Path

import cv2

BOUNDARY = b"edgeferframe"


def jpeg_frames(folder: Path, quality: int = 85) -> list[bytes]:
    """Every PNG in ``folder``, in name order, encoded as a JPEG as a camera would send it."""
    out = []
    for p in sorted(folder.glob("*.png")):
        ok, buf = cv2.imencode(".jpg", cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out.append(buf.tobytes())
    if not out:
        raise ValueError(f"{folder}: no PNG frames")
    return out


def part(jpeg: bytes) -> bytes:
    """One multipart part: the boundary, its headers and the JPEG."""
    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(jpeg))
    return head + jpeg + b"\r\n"


class _Pacer:
    """Shared by both stand-ins: the frame list, the rate, and the pause switch."""

    def __init__(self, jpegs: list[bytes], fps: float) -> None:
        self.jpegs, self.fps = jpegs, fps
        self._sending = threading.Event()
        self._sending.set()
        self._closed = threading.Event()
        self.sent = 0

    def pause(self) -> None:
        """Stop sending; connections stay open, so a reader blocks instead of failing."""
        self._sending.clear()

    def resume(self) -> None:
        self._sending.set()

    @property
    def paused(self) -> bool:
        return not self._sending.is_set()

    def frames(self):
        """Parts to send, one per period, waiting (without sending) while paused."""
        i = 0
        next_t = time.monotonic()
        while not self._closed.is_set():
            if not self._sending.wait(0.05):
                next_t = time.monotonic()
                continue
            yield part(self.jpegs[i % len(self.jpegs)])
            i += 1
            self.sent += 1
            next_t += 1.0 / self.fps
            time.sleep(max(0.0, next_t - time.monotonic()))


class MjpegHttpServer(_Pacer):
    """``http://127.0.0.1:PORT/stream``: every client gets its own endless stream."""

    def __init__(self, jpegs: list[bytes], fps: float = 15.0) -> None:
        super().__init__(jpegs, fps)
        pacer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    for chunk in pacer.frames():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:  # the client went away (a reader closed its capture)
                    pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mjpeg-http", daemon=True)

    def start(self) -> MjpegHttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        self._sending.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class MjpegFifoWriter(_Pacer):
    """A FIFO at ``path`` written with the same multipart stream, as ``ffmpeg -f mpjpeg``
    into a named pipe would. A reader that goes away is waited for again."""

    def __init__(self, path: Path, jpegs: list[bytes], fps: float = 15.0) -> None:
        super().__init__(jpegs, fps)
        self.path = path
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._run, name="mjpeg-fifo", daemon=True)

    def start(self) -> MjpegFifoWriter:
        self._thread.start()
        return self

    def _open(self) -> int | None:
        """The write end, once a reader has the FIFO open (polled: a plain open would block
        stop() for as long as no reader comes)."""
        while not self._closed.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.05)
                continue
            os.set_blocking(fd, True)
            return fd
        return None

    def _run(self) -> None:
        while (fd := self._open()) is not None:
            try:
                for chunk in self.frames():
                    os.write(fd, chunk)
            except OSError:  # every reader closed: wait for the next one
                pass
            finally:
                os.close(fd)

    def stop(self) -> None:
        self._closed.set()
        self._sending.set()
        self._thread.join(timeout=5)
