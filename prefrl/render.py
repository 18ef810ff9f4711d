"""Headless rendering (``prefrl render``): a trained policy's rollout, or a labelled segment pair.

* :func:`render_rollout` - the deterministic policy of a run directory, one or more episodes, to a GIF
  (or MP4 with ``imageio-ffmpeg`` installed), each frame captioned with the step and the true return.
* :func:`render_pair` - two segments of an env (random policy or a run's policy) side by side with their
  true returns and the verdict of a rater (``P(segment 1 preferred)``, tie or skipped).

Frames are written as they are produced (:class:`VideoWriter`), so a long rollout never holds more than one
frame in memory; the video is written under a temporary name and renamed into place when complete, so an
error or an interrupt part-way leaves no broken file behind. Sizes are checked first: width and height in
``[1, MAX_FRAME_SIZE]``, a positive fps, episode count, step count and frame skip.

MuJoCo renders offscreen through EGL (``MUJOCO_GL=egl``, GPU or Mesa's software EGL) or OSMesa
(``MUJOCO_GL=osmesa``, with ``PYOPENGL_PLATFORM=osmesa``). :func:`configure_gl` checks the one set in the
environment, or picks the first that works, in a throw-away subprocess (a broken GL backend can crash
the process that loads it), and otherwise raises :class:`RenderError` naming the Debian package to
install. Pendulum's own renderer needs pygame; without it, frames are drawn with PIL from the state.
"""

from __future__ import annotations

import inspect
import io
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import gymnasium as gym
import imageio.v2 as iio2
import numpy as np
from PIL import Image, ImageDraw

from prefrl.agents import get_agent_class
from prefrl.agents.base import PredictFn
from prefrl.envs import EnvSpec, RewardFactorWrapper, gym_make, load_env_spec, make_env
from prefrl.errors import ConfigError, RenderError, RunDirError, SpecError
from prefrl.raters import make_rater
from prefrl.run_dir import load_run_env_spec, read_run_config
from prefrl.spec_utils import check_int, check_memory
from prefrl.types import SegmentBatch

__all__ = [
    "GL_BACKENDS",
    "MAX_FPS",
    "MAX_FRAME_SIZE",
    "VIDEO_FORMATS",
    "VideoWriter",
    "configure_gl",
    "load_policy",
    "render_pair",
    "render_rollout",
    "write_video",
]

#: the largest frame width or height in pixels
MAX_FRAME_SIZE = 8192
#: the highest frame rate
MAX_FPS = 1000
#: video file suffixes :class:`VideoWriter` writes (MP4 and the others need imageio-ffmpeg)
VIDEO_FORMATS = (".gif", ".mp4", ".webm", ".mov")

#: offscreen MuJoCo backends tried in order when ``MUJOCO_GL`` is not set
GL_BACKENDS = ("egl", "osmesa")

#: what to install for each backend (Debian / Ubuntu)
GL_PACKAGES = {
    "egl": "apt-get install libegl1 libgl1-mesa-dri (software EGL; or an NVIDIA driver's EGL)",
    "osmesa": "apt-get install libosmesa6",
}

# the probe: create and free a tiny offscreen GL context, as gymnasium's MuJoCo renderer does
_PROBE = "import mujoco; ctx = mujoco.GLContext(32, 32); ctx.make_current(); ctx.free(); print('ok')"


# --------------------------------------------------------------------------------------------------
# GL backend
# --------------------------------------------------------------------------------------------------


def _probe_gl(backend: str, timeout: float = 120.0) -> str | None:
    """``None`` if ``backend`` can create a MuJoCo GL context, else the error text."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"probe timed out after {timeout:.0f} s"
    if proc.returncode == 0 and "ok" in proc.stdout:
        return None
    lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def configure_gl() -> str:
    """Make MuJoCo's offscreen rendering work in this process; return the backend used.

    Honours ``MUJOCO_GL`` if set (and checks it), else uses the first of :data:`GL_BACKENDS` that works;
    sets ``MUJOCO_GL`` and ``PYOPENGL_PLATFORM`` accordingly (the latter must match, or PyOpenGL picks
    another platform and the renderer crashes on close).

    :raises RenderError: no working backend; the message lists what to install
    """
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    candidates = [requested] if requested else list(GL_BACKENDS)
    errors = {}
    for backend in candidates:
        if backend not in GL_BACKENDS:
            errors[backend] = f"not an offscreen backend (expected one of {', '.join(GL_BACKENDS)})"
            continue
        error = _probe_gl(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
        errors[backend] = error
    tried = "; ".join(f"MUJOCO_GL={b}: {e}" for b, e in errors.items())
    hints = "\n".join(f"  MUJOCO_GL={b}: {pkg}" for b, pkg in GL_PACKAGES.items())
    raise RenderError(
        f"MuJoCo cannot render offscreen here ({tried}).\nInstall one backend and set MUJOCO_GL:\n{hints}\n"
        "(with osmesa also set PYOPENGL_PLATFORM=osmesa)"
    )


def _is_mujoco(gym_id: str) -> bool:

    entry = gym.envs.registry.get(gym_id)
    return entry is not None and "mujoco" in str(entry.entry_point)


# --------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------


def _pendulum_frame(env: Any, size: int) -> np.ndarray:
    """Pendulum drawn with PIL from ``env.unwrapped.state`` (pygame-free): ``[size, size, 3]`` uint8."""
    theta = float(env.unwrapped.state[0])
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    c, length = size / 2, size * 0.4
    # theta = 0 is upright; gymnasium draws the rod from the pivot towards angle theta + pi/2
    tip = (c + length * np.sin(theta), c - length * np.cos(theta))
    draw.line([(c, c), tip], fill=(204, 77, 77), width=max(2, size // 25))
    r = size // 40 + 1
    draw.ellipse([c - r, c - r, c + r, c + r], fill=(0, 0, 0))
    return np.asarray(image)


class _FrameSource:
    """``frame()`` of an env built for rendering: gymnasium's ``rgb_array`` or the PIL Pendulum fallback."""

    def __init__(self, spec: Any, seed: int, width: int, height: int) -> None:

        self.fallback = False
        self.size = min(width, height)
        kwargs: dict[str, Any] = {}
        if _is_mujoco(spec.gym_id):
            configure_gl()
            kwargs = {"width": width, "height": height}
        elif spec.gym_id.startswith("Pendulum"):
            try:
                import pygame  # noqa: F401
            except ImportError:
                # gymnasium's classic-control renderer needs pygame (gymnasium[classic_control]); the
                # pendulum is simple enough to draw from its state instead
                self.fallback = True
        if self.fallback:
            self.env = make_env(spec, seed=seed)
        else:
            self.env = self._make(spec, seed, kwargs)

    @staticmethod
    def _make(spec: Any, seed: int, size_kwargs: dict[str, Any]) -> Any:

        try:
            env = gym_make(spec, max_episode_steps=spec.horizon, render_mode="rgb_array", **size_kwargs)
        except SpecError as e:
            if isinstance(e.__cause__, gym.error.DependencyNotInstalled):
                raise RenderError(f"{spec.gym_id} cannot render: {e.__cause__}") from e
            raise
        env = RewardFactorWrapper(env, spec)
        env.action_space.seed(seed)
        env.reset(seed=seed)
        return env

    def frame(self) -> np.ndarray:
        if self.fallback:
            return _pendulum_frame(self.env, self.size)
        try:
            frame = self.env.render()
        except Exception as e:  # GL failures surface here, after the env was built
            raise RenderError(f"rendering failed: {type(e).__name__}: {e}") from e
        return np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self.env.close()


def _caption(frame: np.ndarray, lines: Sequence[str], colour: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """``frame`` with a white band of text lines on top."""
    band = 14 * len(lines) + 6
    image = Image.new("RGB", (frame.shape[1], frame.shape[0] + band), (255, 255, 255))
    image.paste(Image.fromarray(frame), (0, band))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((4, 3 + 14 * i), line, fill=colour)
    return np.asarray(image)


class _GifStream:
    """An animated GIF written frame by frame: each frame is encoded by Pillow as a one-frame GIF, and its
    image block (with its colour table made local) is appended to the file, so memory stays one frame.

    Layout (GIF89a): header, logical screen descriptor without a global colour table, the NETSCAPE2.0
    looping extension, then per frame a graphic control extension (its delay), an image descriptor with
    a local colour table, and the LZW data; the trailer ``;`` on :meth:`close`.
    """

    def __init__(self, path: Path, fps: int) -> None:
        self._file = open(path, "wb")  # closed by close(): the writer outlives any with block
        self._delay = max(1, round(100 / fps))  # GIF delays are in hundredths of a second
        self._size: tuple[int, int] | None = None

    def append_data(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._size is None:
            self._size = (width, height)
            # header, logical screen (no global colour table), loop forever
            self._file.write(b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0))
            self._file.write(b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00")
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="GIF")
        self._file.write(b"!\xf9\x04" + struct.pack("<BHB", 0x04, self._delay, 0) + b"\x00")
        self._file.write(_gif_image_block(buffer.getvalue()))

    def close(self) -> None:
        if not self._file.closed:
            if self._size is not None:
                self._file.write(b";")
            self._file.close()


def _gif_image_block(data: bytes) -> bytes:
    """The image descriptor (with the file's global colour table as its local one) and the LZW data of a
    one-frame GIF; its extensions are dropped (the stream writes its own graphic control extension)."""
    packed = data[10]
    position, table = 13, b""
    if packed & 0x80:
        size = 3 * 2 ** ((packed & 0x07) + 1)
        table, position = data[13 : 13 + size], 13 + size
    while data[position] == 0x21:  # extensions: label, then sub-blocks up to a zero-length one
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    if data[position] != 0x2C:
        raise ValueError("Pillow wrote a GIF without an image descriptor")
    descriptor = bytearray(data[position : position + 10])
    if table and not descriptor[9] & 0x80:
        descriptor[9] = (descriptor[9] & ~0x07 & 0xFF) | 0x80 | (packed & 0x07)
    body = data[position + 10 : -1] if data.endswith(b";") else data[position + 10 :]
    return bytes(descriptor) + (table if not data[position + 9] & 0x80 else b"") + body


class VideoWriter:
    """Writes ``[H, W, 3]`` uint8 frames to a .gif or .mp4 one at a time (a context manager).

    The file is written under a temporary name next to ``out`` and renamed to ``out`` when the ``with``
    block ends normally; when it ends with an exception (or :meth:`abort`), the partial file is removed.
    GIFs are streamed by :class:`_GifStream` (Pillow encodes each frame); MP4 (and WebM, MOV) by imageio's
    ffmpeg writer, which needs ``imageio-ffmpeg``.

    :raises ConfigError: an unsupported suffix, ``out`` is a directory, or ``fps`` out of range
    :raises RenderError: no video encoder for the suffix
    """

    def __init__(self, out: str | Path, fps: int = 30) -> None:
        self.path = Path(out)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FORMATS:
            raise ConfigError(f"unsupported video format '{suffix}'; use .gif or .mp4")
        if self.path.is_dir():
            raise ConfigError(f"output {self.path} is a directory; give a file name such as rollout.gif")
        check_int(fps, "fps", 1, MAX_FPS, error=ConfigError)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._shape: tuple[int, ...] | None = None
        self._partial = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        try:
            if suffix == ".gif":
                # imageio's Pillow plugin keeps every frame until it closes: write them as they come
                self._writer: Any = _GifStream(self._partial, fps)
            else:
                self._writer = iio2.get_writer(self._partial, format="FFMPEG", mode="I", fps=fps)
        except Exception as e:
            self._partial.unlink(missing_ok=True)
            if suffix == ".gif":
                raise
            raise RenderError(
                f"writing {suffix} needs a video encoder ({type(e).__name__}: {e}); "
                "pip install imageio-ffmpeg, or write a .gif"
            ) from e

    def append(self, frame: np.ndarray) -> None:
        """Write one frame (every frame must have the shape of the first)."""
        frame = np.asarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise ValueError(f"a frame must be [H >= 1, W >= 1, 3] uint8, got shape {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise ValueError(f"frame {self.frames} has shape {frame.shape}, the first had {self._shape}")
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it to ``out``; return ``out``.

        :raises ValueError: no frame was written (the partial file is removed)
        """
        self._writer.close()
        if self.frames == 0:
            self._partial.unlink(missing_ok=True)
            raise ValueError("no frames to write")
        self._partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the partial file (``out`` is left as it was)."""
        try:
            self._writer.close()
        except Exception:  # the file is removed anyway; the original error is what matters
            pass
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_video(frames: Iterable[np.ndarray], out: str | Path, fps: int = 30) -> Path:
    """Write ``frames`` (``[H, W, 3]`` uint8; any iterable, a generator is consumed as it goes) to a .gif,
    or a .mp4 (needs ``imageio-ffmpeg``); return ``out``. A failure part-way leaves no file behind."""
    with VideoWriter(out, fps=fps) as video:
        for frame in frames:
            video.append(frame)
    return video.path


def _check_frame_size(width: int, height: int) -> None:
    check_int(width, "width", 1, MAX_FRAME_SIZE, error=ConfigError)
    check_int(height, "height", 1, MAX_FRAME_SIZE, error=ConfigError)


# --------------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------------


def run_env_spec(run_dir: str | Path) -> EnvSpec:
    """The env spec a run directory was trained on (its stored ``env.yaml``)."""
    return load_run_env_spec(run_dir)


def load_policy(run_dir: str | Path, trust: bool = False) -> tuple[EnvSpec, PredictFn]:
    """``(env_spec, predict)`` of a finished run: its agent's deterministic policy (``Agent.load_policy``).

    :param trust: let a built-in agent read a run saved before prefrl's safe policy files through loaders
        that unpickle (a crafted file runs code: only for folders you trust); passed on to agents whose
        ``load_policy`` takes it
    """
    run_dir = Path(run_dir)
    run = read_run_config(run_dir)
    if not (run_dir / "policy.zip").is_file():
        raise RunDirError(f"{run_dir} is not a finished run directory (needs config.yaml and policy.zip)")
    agent_cls = get_agent_class(run["agent"])
    # third-party agents may define load_policy(run_dir) alone: they are only asked to trust when told
    takes_trust = "trust" in inspect.signature(agent_cls.load_policy).parameters
    options = {"trust": True} if trust and takes_trust else {}
    return load_run_env_spec(run_dir), agent_cls.load_policy(run_dir, **options)


def _action(predict: Callable[[np.ndarray], np.ndarray] | None, env: Any, obs: np.ndarray) -> np.ndarray:
    if predict is None:
        return env.action_space.sample()
    return np.asarray(predict(np.asarray(obs)[None]))[0]


# --------------------------------------------------------------------------------------------------
# Rollout and pair rendering
# --------------------------------------------------------------------------------------------------


def render_rollout(
    run_dir: str | Path,
    out: str | Path | None = None,
    episodes: int = 1,
    max_steps: int | None = None,
    fps: int = 30,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
    frame_skip: int = 1,
    trust: bool = False,
) -> Path:
    """Render the deterministic policy of ``run_dir`` for ``episodes`` episodes; return the video path.

    :param out: ``.gif`` or ``.mp4`` (default ``run_dir/rollout.gif``)
    :param max_steps: steps per episode (default: the env's horizon)
    :param frame_skip: keep every ``frame_skip``-th frame (smaller files)
    :param trust: see :func:`load_policy`
    :raises ConfigError: a size, count or rate out of range, or an unsupported ``out`` suffix
    :raises RenderError: no way to render here (the message says what to install)
    """
    _check_frame_size(width, height)
    check_int(episodes, "episodes", 1, error=ConfigError)
    check_int(fps, "fps", 1, MAX_FPS, error=ConfigError)
    check_int(frame_skip, "frame_skip", 1, error=ConfigError)
    check_int(seed, "seed", 0, error=ConfigError)
    if max_steps is not None:
        check_int(max_steps, "max_steps", 1, error=ConfigError)
    spec, predict = load_policy(run_dir, trust=trust)
    out = Path(run_dir) / "rollout.gif" if out is None else Path(out)
    with VideoWriter(out, fps=max(1, fps // frame_skip)) as video:
        source = _FrameSource(spec, seed, width, height)
        try:
            for frame in _rollout_frames(source, spec, predict, episodes, max_steps, fps, seed, frame_skip):
                video.append(frame)
        finally:
            source.close()
    return video.path


def _rollout_frames(
    source: _FrameSource,
    spec: EnvSpec,
    predict: PredictFn,
    episodes: int,
    max_steps: int | None,
    fps: int,
    seed: int,
    frame_skip: int,
) -> Iterator[np.ndarray]:
    """The captioned frames of :func:`render_rollout`, produced one at a time."""
    for episode in range(episodes):
        obs, _ = source.env.reset(seed=seed + episode)
        total, steps, t = 0.0, max_steps or spec.horizon, 0
        for t in range(steps):
            if t % frame_skip == 0:
                caption = [f"{spec.name} episode {episode + 1}", f"step {t}  true return {total:.1f}"]
                yield _caption(source.frame(), caption)
            obs, reward, terminated, truncated, _ = source.env.step(_action(predict, source.env, obs))
            total += float(reward)
            if terminated or truncated:
                break
        caption = [f"{spec.name} episode {episode + 1} (end)", f"step {t + 1}  true return {total:.1f}"]
        last = _caption(source.frame(), caption)
        for _ in range(max(1, fps // 2)):  # hold the last frame
            yield last


def _record_segment(
    source: _FrameSource, predict: Callable[[np.ndarray], np.ndarray] | None, length: int, seed: int
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    env = source.env
    obs, _ = env.reset(seed=seed)
    record: dict[str, list[Any]] = {"obs": [], "act": [], "reward": [], "factors": [], "dones": []}
    frames = []
    for _ in range(length):
        frames.append(source.frame())
        action = _action(predict, env, obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        for key, value in (("obs", obs), ("act", action), ("reward", reward), ("factors", info["factors"])):
            record[key].append(np.asarray(value, dtype=np.float64))
        record["dones"].append(bool(terminated or truncated))
        obs = next_obs
        if terminated or truncated:
            raise RenderError(
                f"the episode ended after {len(frames)} steps, before the {length}-step segment"
            )
    arrays = {k: np.asarray(v) for k, v in record.items()}
    arrays["next_obs"] = np.asarray(obs, dtype=np.float64)
    return arrays, frames


def render_pair(
    env: str,
    rater: str,
    out: str | Path = "pair.gif",
    run_dir: str | Path | None = None,
    segment_length: int | None = None,
    seed: int = 0,
    fps: int = 20,
    width: int = 320,
    height: int = 240,
    trust: bool = False,
) -> tuple[Path, float | None]:
    """Two segments side by side with their true returns and ``rater``'s verdict; returns ``(path, label)``.

    Segment 1 starts from ``reset(seed)``, segment 2 from ``reset(seed + 1)``; actions come from the policy
    of ``run_dir`` (deterministic) or are uniform random. The rater labels just this pair (raters whose
    thresholds depend on the batch, such as ``hierarchical`` or ``skip``, see a batch of two).

    :param trust: see :func:`load_policy`
    :returns: the video path and ``P(segment 1 preferred)`` (``None`` if the rater skipped the query)
    :raises ConfigError: a size, rate or length out of range (the frames of both segments are kept to be
        drawn side by side: their memory is checked against the machine's first)
    """
    _check_frame_size(width, height)
    check_int(fps, "fps", 1, MAX_FPS, error=ConfigError)
    check_int(seed, "seed", 0, error=ConfigError)
    if segment_length is not None:
        check_int(segment_length, "segment_length", 1, error=ConfigError)
    if run_dir is not None:
        spec, predict = load_policy(run_dir, trust=trust)
        if spec.name != load_env_spec(env).name:
            raise ValueError(f"--run {run_dir} was trained on '{spec.name}', not on '{env}'")
    else:
        spec, predict = load_env_spec(env), None
    judge = make_rater(rater, spec)
    length = segment_length or spec.segment_length
    if length > spec.horizon:
        raise ConfigError(f"segment_length {length} exceeds {spec.name}'s horizon ({spec.horizon} steps)")
    # two recorded segments of frames (+ one composed frame at a time): [2, length, H, W, 3] uint8
    check_memory(2 * length * width * height * 3, f"--segment-length {length} at {width}x{height} pixels")
    source = _FrameSource(spec, seed, width, height)
    try:
        recorded = [_record_segment(source, predict, length, seed + i) for i in range(2)]
    finally:
        source.close()
    batch = SegmentBatch(**{k: np.stack([r[0][k] for r in recorded]) for k in recorded[0][0]})
    labels, answered = judge.label_array(batch, np.array([[0, 1]]), np.random.default_rng(seed))
    label = float(labels[0]) if answered[0] else None
    if label is None:
        verdict = "query skipped"
    elif label == 0.5:
        verdict = "tie (0.5)"
    else:
        verdict = f"P(left preferred) = {label:.2f}: {'LEFT' if label > 0.5 else 'RIGHT'} preferred"
    returns = batch.reward.sum(axis=1)
    policy_name = "random policy" if run_dir is None else f"policy of {Path(run_dir).name}"
    title = [f"{spec.name}, {policy_name}; rater {rater}", verdict]

    def frames() -> Iterator[np.ndarray]:
        frame = None
        for t in range(length):
            halves = []
            for i, side in enumerate(("left", "right")):
                so_far = batch.reward[i, : t + 1].sum()
                lines = [f"segment {i + 1} ({side})", f"return so far {so_far:.1f} / {returns[i]:.1f}"]
                halves.append(_caption(recorded[i][1][t], lines))
            frame = _caption(np.concatenate(halves, axis=1), title)
            yield frame
        for _ in range(fps):  # hold the verdict
            yield frame

    return write_video(frames(), out, fps=fps), label


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
