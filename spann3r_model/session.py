"""Streaming Spann3R: one frame in, the previous frame's refined reconstruction out.

Each :meth:`StreamingSession.step` encodes only the new frame, reads the memory with the query
computed at the previous step, runs both decoders, regresses the *previous* frame with head 1
(its refined result, exactly as the official loop produces it) and writes that frame to memory.
Head 2 runs only when a provisional result is asked for, or in :meth:`StreamingSession.flush`
for the last frame, from the decoder-2 token maps kept on the session. The official loop runs
head 2 on every pair and throws the result away for all but the last one.

Results are copied to the CPU as soon as they exist. What the session keeps on the device is
bounded: the preallocated memory, and one frame's encoder tokens, query and hooked decoder maps.
"""

from __future__ import annotations

from contextlib import nullcontext
import dataclasses
import hashlib
import json
from typing import Any, ContextManager, Optional

import numpy as np
import torch

from spann3r_model.backends.onednn_linear import pack_onednn_weights
from spann3r_model.config import EngineConfig, MemoryConfig, ModelConfig
from spann3r_model.data.crop import CropBox
from spann3r_model.memory import SpatialMemory, WriteReport
from spann3r_model.pose_estimation import attach_pose, check_K, PNP_MAX_POINTS
from spann3r_model.preprocess import preprocess
from spann3r_model.results import FrameResult, MemoryStats, StepOutput
from spann3r_model.spann3r import Prediction, Spann3R

#: Format tag of :meth:`StreamingSession.metadata`.
STATE_FORMAT = 'spann3r_session/1'
#: Official evaluation memory settings and the default engine (frozen, safe to share).
DEFAULT_MEMORY = MemoryConfig()
DEFAULT_ENGINE = EngineConfig()


def resolve_device(engine: EngineConfig) -> torch.device:
    """Turn ``EngineConfig.device`` into a concrete device.

    :raises ValueError: when CUDA is requested but not available.
    """
    if engine.device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if engine.device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {engine.device!r} requested but CUDA is not available')
    return torch.device(engine.device)


@dataclasses.dataclass
class _Frame:
    """What the session remembers of the newest frame until the next step."""

    index: int
    stamp: float
    rgb: np.ndarray
    crop: CropBox
    feat: torch.Tensor
    pos: torch.Tensor
    query: Optional[torch.Tensor] = None
    camera: int = 0
    K: Optional[np.ndarray] = None  # [3, 3] of the model image, from the camera's calibration


class StreamingSession:
    """Run Spann3R online, one frame at a time.

    :param model: the network (moved to the engine's device; copied when quantised).
    :param memory_config: memory limits and thresholds.
    :param engine_config: device, precision and image size. Its process-wide settings (CPU
        threads, allocator) are the application's to apply, once, with
        :func:`spann3r_model.backends.process.apply_process_settings`; the session changes no
        process-wide state.
    :param provisional: also return the head-2 result of each new frame (costs one head).
    :param estimate_pose: attach intrinsics and a PnP camera pose to results: the camera's own
        K when :meth:`step` is given one, else the focal estimated from that camera's first frame
        without K.
    """

    def __init__(self, model: Spann3R, memory_config: MemoryConfig = DEFAULT_MEMORY,
                 engine_config: EngineConfig = DEFAULT_ENGINE, *, provisional: bool = False,
                 estimate_pose: bool = True) -> None:
        if not isinstance(model, Spann3R):
            raise ValueError(f'model must be a Spann3R, got {type(model).__name__}')
        self._device = resolve_device(engine_config)
        precision = engine_config.precision
        if precision == 'fp16' and self._device.type != 'cuda':
            raise ValueError(f'precision {precision} needs a CUDA device, got {self._device}')
        if precision == 'int8' and self._device.type != 'cpu':
            raise ValueError(f'precision int8 runs on the CPU only, got {self._device}')
        if engine_config.image_size % model.config.patch_size:
            raise ValueError(f'image_size {engine_config.image_size} is not a multiple of the '
                             f'patch size {model.config.patch_size}')
        if precision == 'int8':
            from spann3r_model.backends.int8 import quantize_for_cpu
            model = quantize_for_cpu(model)
        else:
            model = model.to(self._device).eval()
        if engine_config.pack_weights and self._device.type == 'cpu' and precision in (
                'fp32', 'int8'):
            # The float layers only: int8 linear layers are not nn.Linear any more.
            pack_onednn_weights(m.weight for m in model.modules()
                                if type(m) in (torch.nn.Linear, torch.nn.Conv2d))
        self.model = model
        self.memory_config = memory_config
        self.engine_config = engine_config
        self.provisional = provisional
        self.estimate_pose = estimate_pose
        #: Confident pixels PnP uses at most (None: all of them, as the official demo does).
        self.pnp_max_points: Optional[int] = PNP_MAX_POINTS
        #: Attach the focal only and leave the pose to the caller
        #: (:func:`~spann3r_model.pose_estimation.attach_pnp_pose`), for callers that run PnP
        #: outside the thread of the model.
        self.defer_pnp = False
        self._autocast_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(precision)
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str, engine_config: EngineConfig = DEFAULT_ENGINE,
                        memory_config: MemoryConfig = DEFAULT_MEMORY,
                        preset: Optional[str] = None, **kwargs: Any) -> 'StreamingSession':
        """Load weights (official ``.pth`` or our safetensors) and start a session.

        :param path: checkpoint file.
        :param engine_config: see the constructor.
        :param memory_config: see the constructor.
        :param preset: architecture preset for checkpoints that do not record their config.
        :param kwargs: ``provisional`` / ``estimate_pose``.
        """
        from spann3r_model.checkpoint import load_model
        model, _ = load_model(path, preset=preset, device='cpu')
        return cls(model, memory_config, engine_config, **kwargs)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a new reconstruction (frame indices restart at 0)."""
        self._memory: Optional[SpatialMemory] = None
        self._prev: Optional[_Frame] = None
        self._pending: Optional[list[torch.Tensor]] = None
        self._frame_count = 0
        # Per camera: the focal estimated from its first frame without K, and that frame's index.
        self._focals: dict[int, float] = {}
        self._first_index: dict[int, int] = {}
        self._stats = MemoryStats()

    @property
    def frame_count(self) -> int:
        """Frames passed to :meth:`step` since the last reset."""
        return self._frame_count

    @property
    def memory_stats(self) -> MemoryStats:
        """Memory bookkeeping after the last step."""
        return self._stats

    @property
    def device(self) -> torch.device:
        """Device the model runs on."""
        return self._device

    @property
    def memory(self) -> Optional[SpatialMemory]:
        """The spatial memory (None before the second frame)."""
        return self._memory

    def _autocast(self) -> ContextManager:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self._device.type, dtype=self._autocast_dtype)

    # ------------------------------------------------------------------ streaming
    def step(self, rgb_uint8_hwc: np.ndarray, stamp: float, camera: int = 0,
             K: Optional[np.ndarray] = None) -> StepOutput:
        """Add one frame.

        :param rgb_uint8_hwc: ``[H, W, 3]`` uint8 RGB image of any size.
        :param stamp: the caller's timestamp in seconds.
        :param camera: which camera took it (several cameras may share one session).
        :param K: ``[3, 3]`` intrinsics of ``rgb_uint8_hwc`` (e.g. from its camera_info); None
            to use the focal estimated from the camera's first frame that came without K.
        :return: the refined result of the previous frame (None for the first frame), the
            provisional result of this frame when enabled, and the memory bookkeeping.
        :raises ValueError: for an image that is not ``[H, W, 3]`` uint8 of usable size, or a
            K that is not a ``[3, 3]`` pinhole matrix with positive focal lengths; the session
            is unchanged then.
        """
        pre = preprocess(rgb_uint8_hwc, size=self.engine_config.image_size)
        K_model = None if K is None else pre.crop.input_to_model_intrinsics(check_K(K))
        if K_model is None:
            self._first_index.setdefault(int(camera), self._frame_count)
        img = torch.from_numpy(pre.img)[None].to(self._device)
        hw = (img.shape[-2], img.shape[-1])
        m = self.model
        with torch.no_grad(), self._autocast():
            feat, pos = m.encode_image(img)
            new = _Frame(self._frame_count, float(stamp), pre.rgb, pre.crop, feat, pos,
                         camera=int(camera), K=K_model)
            prev = self._prev
            if prev is None:
                self._prev = new
                self._frame_count += 1
                return StepOutput(refined=None, provisional=None, memory=self._stats)
            if self._memory is None:
                self._memory = m.new_memory(self.memory_config, feat.shape[1])
            fused = prev.feat if prev.query is None else self._memory.read(prev.query)
            dec1, dec2 = m.decode(fused, prev.pos, feat, pos)
            key = m.key(1, prev.feat, dec1[-1])
            new.query = m.key(2, feat, dec2[-1])
            res1 = m.regress(1, m.hooked(dec1), hw)
            value = m.encode_value(res1['pts3d'])
            # The similarity check is the step's one host sync (the write decision needs its
            # value); the device-to-host copies of the results come after every kernel of the
            # step is queued.
            report = self._memory.write(key, value + key, frame=prev.index)
            hooked2 = m.hooked(dec2)
            res2 = m.regress(2, hooked2, hw) if self.provisional else None
            refined = self._to_result(res1, prev, provisional=False)
            provisional = None
            if res2 is not None:
                provisional = self._to_result(res2, new, provisional=True)
        self._pending = hooked2
        self._prev = new
        self._frame_count += 1
        self._stats = self._make_stats(report)
        return StepOutput(refined=refined, provisional=provisional, memory=self._stats)

    def flush(self) -> Optional[FrameResult]:
        """Return the last frame's result (head 2 of the last pair), or None before 2 frames.

        Does not change the session: streaming may continue afterwards.
        """
        if self._pending is None or self._prev is None:
            return None
        hw = (self.engine_config.image_size,) * 2
        with torch.no_grad(), self._autocast():
            res2 = self.model.regress(2, self._pending, hw)
        return self._to_result(res2, self._prev, provisional=False)

    def _make_stats(self, report: WriteReport) -> MemoryStats:
        mem = self._memory
        return MemoryStats(tokens=mem.num_tokens, working_frames=mem.wm,
                           long_term_tokens=mem.lm, skipped=not report.stored,
                           similarity=report.similarity, pruned=report.pruned)

    def _to_result(self, pred: Prediction, frame: _Frame, provisional: bool) -> FrameResult:
        pts3d = pred['pts3d'][0].float().cpu().numpy()
        conf = pred['conf'][0].float().cpu().numpy()
        result = FrameResult(index=frame.index, stamp=frame.stamp, pts3d=pts3d, conf=conf,
                             rgb=frame.rgb, crop=frame.crop, provisional=provisional,
                             camera=frame.camera)
        if self.estimate_pose:
            attach_pose(result, frame.K, self._focals, self._first_index,
                        defer_pnp=self.defer_pnp, max_points=self.pnp_max_points)
        return result

    # ------------------------------------------------------------------ persistence
    def fingerprint(self) -> str:
        """Hash of everything a saved state must agree with (architecture, memory, image size)."""
        cfg: ModelConfig = self.model.config
        blob = json.dumps({'model': cfg.to_dict(), 'memory': self.memory_config.to_dict(),
                           'image_size': self.engine_config.image_size}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors needed to continue this reconstruction after a restart (CPU copies).

        The frame tensors keep the dtype they were computed in (bfloat16 or float16 in parts of
        an autocast session), so that a session continued from them computes exactly what the
        uninterrupted one does: a float32 copy of a bfloat16 query, say, would reach the
        readout and the heads unrounded. The memory is float32 in every mode.
        """
        out: dict[str, torch.Tensor] = {}
        if self._memory is not None:
            out.update({f'memory.{k}': v for k, v in self._memory.state_dict().items()})
        if self._prev is not None:
            out['prev.feat'] = self._prev.feat.detach().cpu().clone()
            out['prev.pos'] = self._prev.pos.cpu().clone()
            out['prev.rgb'] = torch.from_numpy(self._prev.rgb.copy())
            if self._prev.query is not None:
                out['prev.query'] = self._prev.query.detach().cpu().clone()
        if self._pending is not None:
            for i, t in enumerate(self._pending):
                out[f'pending.{i}'] = t.detach().cpu().clone()
        return out

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable companion of :meth:`state_dict`."""
        prev = self._prev
        return {
            'format': STATE_FORMAT,
            'fingerprint': self.fingerprint(),
            'frame_count': self._frame_count,
            # 'focal' is camera 0's, as states of a single camera always had it.
            'focal': self._focals.get(0),
            'focals': {str(c): f for c, f in sorted(self._focals.items())},
            'first_index': {str(c): i for c, i in sorted(self._first_index.items())},
            'prev': None if prev is None else {
                'index': prev.index, 'stamp': prev.stamp,
                'crop': dataclasses.asdict(prev.crop), 'camera': prev.camera,
                'K': None if prev.K is None else prev.K.tolist()},
            'model_config': self.model.config.to_dict(),
            'memory_config': self.memory_config.to_dict(),
            'image_size': self.engine_config.image_size,
        }

    def _restored(self, t: torch.Tensor) -> torch.Tensor:
        # Without autocast the layers take float32 only: a state saved by a bf16 or fp16
        # session is widened; with autocast the saved dtypes are kept as they were.
        t = t.to(self._device)
        return t.float() if self._autocast_dtype is None and t.is_floating_point() else t

    def load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Continue a reconstruction saved with :meth:`state_dict` and :meth:`metadata`.

        :raises ValueError: when the state was saved with another format, architecture, memory
            configuration or image size, or is incomplete; the session is unchanged then.
        """
        if metadata.get('format') != STATE_FORMAT:
            raise ValueError(f'unknown session state format {metadata.get("format")!r}, '
                             f'expected {STATE_FORMAT!r}')
        if metadata.get('fingerprint') != self.fingerprint():
            raise ValueError('session state was saved with a different model architecture, '
                             'memory configuration or image size')
        prev_meta = metadata.get('prev')
        if prev_meta is not None and not {'prev.feat', 'prev.pos', 'prev.rgb'} <= set(tensors):
            raise ValueError('session state lacks the previous frame tensors (prev.*)')
        memory_state = {k[len('memory.'):]: v for k, v in tensors.items()
                        if k.startswith('memory.')}
        memory = None
        if memory_state:
            p = tensors['prev.feat'].shape[1] if 'prev.feat' in tensors else 0
            memory = self.model.new_memory(self.memory_config, p)
            with torch.no_grad():
                memory.load_state_dict(memory_state, self._device)
        dev = self._device
        prev = None
        if prev_meta is not None:
            c = prev_meta['crop']
            crop = CropBox(crop1=tuple(c['crop1']), resized_wh=tuple(c['resized_wh']),
                           offset=tuple(c['offset']), size=int(c['size']))
            query = tensors.get('prev.query')
            K = prev_meta.get('K')
            prev = _Frame(int(prev_meta['index']), float(prev_meta['stamp']),
                          tensors['prev.rgb'].numpy().copy(), crop,
                          self._restored(tensors['prev.feat']), tensors['prev.pos'].to(dev),
                          None if query is None else self._restored(query),
                          camera=int(prev_meta.get('camera', 0)),
                          K=None if K is None else np.array(K, dtype=np.float64))
        pending_keys = sorted(k for k in tensors if k.startswith('pending.'))
        pending = [self._restored(tensors[k]) for k in pending_keys] or None
        self.reset()
        self._memory, self._prev, self._pending = memory, prev, pending
        self._frame_count = int(metadata['frame_count'])
        focals = metadata.get('focals')
        if focals is None:  # saved before the focal was kept per camera
            focals = {} if metadata.get('focal') is None else {0: metadata['focal']}
        self._focals = {int(c): float(f) for c, f in focals.items()}
        # A state saved before first frames were kept per camera had camera 0's at frame 0.
        first = metadata.get('first_index', {0: 0})
        self._first_index = {int(c): int(i) for c, i in first.items()}
        if memory is not None:
            self._stats = MemoryStats(tokens=memory.num_tokens, working_frames=memory.wm,
                                      long_term_tokens=memory.lm)
