"""The ``fcpose`` command line: predict, track, serve, train, eval, bench, export, convert, synth, presets, dataset.

Errors a user can cause (bad paths, unreadable images, wrong checkpoints, unknown config keys) print one
line on stderr and exit with status 2, without a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import FCPoseError, worker_message
from .precision import PRECISIONS
from .structures import PEOPLE_OKS_THRESHOLD, PEOPLE_SCORE_THRESHOLD

# --precision of the commands that run a torch model
PRECISION_HELP = ("network precision of the torch backend (autocast on a CPU, where bf16/fp16 need native "
                  "support; the network's weights converted on CUDA); the decoding stays fp32")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the usage itself is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bounded(cast, expected: str, low, high=None):
    """An argparse ``type``: ``cast(text)`` within ``[low, high]`` (no upper bound when ``high`` is None), else
    the one-line error "expected <expected>, got '<text>'"."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (low <= value and (high is None or value <= high)):  # also rejects nan
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _bounded(int, "a positive integer", 1)
_non_negative_int = _bounded(int, "an integer >= 0", 0)
_unit_float = _bounded(float, "a number in [0, 1]", 0.0, 1.0)


def _device(text: str) -> str:
    """An argparse ``type``: ``cpu``, ``cuda`` or ``cuda:N`` (what fcpose runs on), else a one-line error."""
    kind, colon, index = text.partition(":")
    if text == "cpu" or kind == "cuda" and (not colon or index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


# The options of the commands that run a model: one definition each (name, validation, help), whichever
# command shows it (see add_model_options).
_MODEL_OPTIONS = {
    "weights": dict(help="fcpose checkpoint, official AdelaiDet .pth, or model-zoo name (e.g. fcpose_r50_official)"),
    "device": dict(type=_device, default="cpu", help="cpu or cuda[:N] (default: cpu)"),
    "size": dict(type=_positive_int, default=None, help="test short side in pixels (default: the model's)"),
    "max-size": dict(type=_positive_int, default=None, help="test long-side limit in pixels (default: the model's)"),
    "score-threshold": dict(type=_unit_float, default=None,
                            help="minimum detection score (default: the model's, 0.05)"),
    "draw-threshold": dict(type=_unit_float, default=PEOPLE_SCORE_THRESHOLD,
                           help="minimum score of the people drawn and counted (default 0.3); the JSON output "
                                "keeps every detection down to --score-threshold"),
    "keypoint-threshold": dict(type=float, default=None,
                               help="minimum keypoint score drawn (default: 0.05 for softmax scores, 0 for logits)"),
    "backend": dict(default="torch", choices=["torch", "onnxruntime", "openvino"],
                    help="torch (default); onnxruntime with --weights MODEL.onnx or openvino with --weights "
                         "MODEL.xml (fp32 or int8) from `fcpose export`"),
    "precision": dict(default="fp32", choices=PRECISIONS, help=PRECISION_HELP),
    "preprocess": dict(default="auto", choices=["auto", "host", "device"],
                       help="resize/normalise with PIL on the CPU (host) or on the device from the uint8 image "
                            "(device); auto: device on CUDA, host on CPU (torch backend)"),
    "compile": dict(action="store_true", help="torch.compile the network (falls back to eager on failure)"),
    "no-optimize": dict(action="store_true",
                        help="torch backend: run the model as loaded (default: an inference copy with frozen BN "
                             "folded into the convolutions and channels-last memory)"),
    "threads": dict(type=_positive_int, default=None, help="CPU threads of the model (default: the library's)"),
}


def add_model_options(parser: argparse.ArgumentParser, *names: str, weights_required: bool = True) -> None:
    """Add the model options ``names`` (keys of ``_MODEL_OPTIONS``, in this order) to ``parser``: the same
    flag, validation and help in every command. ``--weights`` is required unless ``weights_required`` is False."""
    for name in names:
        extra = {"required": weights_required} if name == "weights" else {}
        parser.add_argument(f"--{name}", **_MODEL_OPTIONS[name], **extra)


def plain_text(text: str) -> str:
    """A docstring paragraph as plain text for ``--help``: reST inline markup (double backquotes) removed,
    lines joined."""
    return " ".join(text.replace("``", "").split())


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="detect people and keypoints in images, folders and videos",
                       description="Writes OUT/predictions.json (COCO results format; keypoints in COCO's pixel-"
                                   "index convention) and a rendered image or video per input.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder of images, or video file")
    add_model_options(p, "weights", "score-threshold", "device", "size", "max-size", "backend", "precision",
                      "preprocess", "compile", "no-optimize", "draw-threshold", "keypoint-threshold")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--annotations", default=None,
                   help="COCO annotation JSON whose image ids are used for image_id (default: numeric file names)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images of equal size run together (default 4)")
    p.add_argument("--no-render", action="store_true", help="only write predictions.json")
    p.add_argument("--draw-nms", type=_unit_float, default=PEOPLE_OKS_THRESHOLD,
                   help="a second detection of the same person is not drawn or counted: people whose keypoints "
                        "have OKS > this with a better-scored drawn person (COCO OKS, that person's box area as "
                        "the scale) are suppressed (default 0.5; 1 turns it off); predictions.json is not affected")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from .inference.predict_command import run_predict

    return run_predict(args.sources, args.weights, args.out, score_threshold=args.score_threshold,
                       device=args.device, size=args.size, max_size=args.max_size, annotations=args.annotations,
                       render=not args.no_render, draw_threshold=args.draw_threshold,
                       keypoint_threshold=args.keypoint_threshold, batch_size=args.batch_size,
                       progress=not args.no_progress, backend=args.backend, precision=args.precision,
                       compile=args.compile, optimize=not args.no_optimize, draw_nms=args.draw_nms,
                       preprocess=args.preprocess)


def _add_track(sub) -> None:
    p = sub.add_parser("track", help="track people across video frames (ids, smoothing, live sources)",
                       description="Each SOURCE is one sequence: a video file, a webcam index (0), an rtsp:// or "
                                   "http(s):// stream, an image URL, a folder or glob pattern of images (frames in "
                                   "name order). Writes OUT/tracks.json (PoseTrack18-style: images with frame_id/"
                                   "vid_id, annotations with track_id, keypoints, scores, bbox), OUT/mot/NAME.txt "
                                   "with --mot, and OUT/NAME.mp4 with each person coloured by track id. Ctrl-C stops "
                                   "and keeps everything processed so far (valid JSON, playable video).")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video, webcam index, stream/image URL, folder, glob")
    add_model_options(p, "weights", "score-threshold", "device", "size", "max-size", "precision", "preprocess",
                      "no-optimize", "draw-threshold", "keypoint-threshold")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--smooth", action="store_true", help="One-Euro keypoint smoothing per track (tracker.min_cutoff, "
                                                          "tracker.beta)")
    p.add_argument("--mot", action="store_true", help="also write MOT-challenge text files in OUT/mot/")
    p.add_argument("--realtime", action="store_true",
                   help="live sources: drop frames when inference falls behind (default: every frame is processed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="tracker.KEY=VALUE",
                   help="override a tracker setting, e.g. --set tracker.max_missed=60 (repeatable)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="frames per network call (default 1)")
    p.add_argument("--no-render", action="store_true", help="only write the JSON (and MOT) files")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a URL or stream (default 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(func=_cmd_track)


def _cmd_track(args) -> int:
    from .inference.track_command import run_track

    return run_track(args.sources, args.weights, args.out, smooth=args.smooth, mot=args.mot,
                     render=not args.no_render, realtime=args.realtime, overrides=args.overrides,
                     score_threshold=args.score_threshold, device=args.device, size=args.size,
                     max_size=args.max_size, batch_size=args.batch_size, draw_threshold=args.draw_threshold,
                     keypoint_threshold=args.keypoint_threshold, progress=not args.no_progress,
                     precision=args.precision, optimize=not args.no_optimize, timeout=args.timeout,
                     preprocess=args.preprocess)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train FCPose on a COCO-format keypoint dataset (also under torchrun)",
                       description="Writes OUT/model_final.pt (for predict/eval), OUT/last.pt (for --resume), "
                                   "OUT/config.yaml, OUT/metrics.jsonl and TensorBoard logs in OUT/tensorboard. "
                                   "Distributed: torchrun --nproc_per_node N -m fcpose train ...")
    p.add_argument("--config", required=True, help="preset name or YAML file")
    p.add_argument("--data", required=True, help="COCO-format keypoint annotation JSON")
    p.add_argument("--images", required=True, help="image folder of the dataset")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set solver.base_lr=0.02 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="fine-tune from a checkpoint (fcpose .pt, official .pth or a zoo name such as "
                        "fcpose_r50_official): tensors that fit are loaded, another keypoint set's keypoints copied "
                        "by name (the others start fresh), what does not fit re-initialised and listed; the "
                        "optimiser starts fresh")
    p.add_argument("--max-iter", type=_positive_int, default=None, help="shortcut for --set solver.max_iter=N")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="global images per iteration (shortcut for solver.ims_per_batch; lr scales linearly)")
    p.add_argument("--eval-data", default=None, help="annotation JSON evaluated periodically and at the end")
    p.add_argument("--eval-images", default=None, help="its image folder (default: --images)")
    p.add_argument("--device", type=_device, default="cpu",
                   help="cpu or cuda (under torchrun: each process its local GPU)")
    p.add_argument("--num-workers", type=_non_negative_int, default=None,
                   help="data loader workers (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from pathlib import Path

    from .engine.trainer import run_train
    from .errors import InputError
    from .fileio import check_output_dir

    for folder, what in ((args.images, "--images"), (args.eval_images, "--eval-images")):
        if folder is not None and not Path(folder).is_dir():
            raise InputError(f"{what} folder not found: {folder}")
    check_output_dir(args.output)

    return run_train(config=args.config, data=args.data, images=args.images, output=args.output,
                     overrides=args.overrides, resume=args.resume, max_iter=args.max_iter,
                     batch_size=args.batch_size, eval_data=args.eval_data, eval_images=args.eval_images,
                     device=args.device, num_workers=args.num_workers, progress=not args.no_progress,
                     init=args.init)


def _add_eval(sub) -> None:
    from .engine.crowding import SPLITS
    from .engine.evaluation import PROTOCOLS

    p = sub.add_parser("eval", help="COCO keypoint AP of a checkpoint on a dataset, or of a results file",
                       description="Runs the model of --weights on every image of the --data annotation file "
                                   "(sharded when launched with torchrun), or takes the results file of "
                                   "--predictions, and scores it with pycocotools (OKS keypoint AP and box AP).")
    p.add_argument("--data", required=True, help="COCO-format annotation JSON (ground truth)")
    add_model_options(p, "weights", "device", "size", "max-size", "score-threshold", "backend", "no-optimize",
                      weights_required=False)
    p.add_argument("--images", help="image folder of the dataset (with --weights)")
    p.add_argument("--predictions", help="score an existing COCO results JSON instead of running a model")
    p.add_argument("--json", dest="json_out", help="write the metrics here as JSON")
    p.add_argument("--results", dest="results_out", help="also write the predictions (COCO results JSON) here")
    p.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                   help="keypoint AP as COCO or CrowdPose score it (AP easy/medium/hard, through xtcocotools: see "
                        "docs/crowdpose_ochuman.md); auto: CrowdPose's for CrowdPose's files (default: auto)")
    p.add_argument("--split-by", choices=SPLITS,
                   help="also keypoint AP of the images in parts by crowd index (CrowdPose's easy/medium/hard; from "
                        "the file or computed) or by number of people")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    from .engine.evaluate import run_eval
    from .fileio import check_output_file

    for path, what in ((args.json_out, "metrics file"), (args.results_out, "results file")):
        if path:
            check_output_file(path, what)  # before the slow part

    return run_eval(data=args.data, weights=args.weights, images=args.images, predictions=args.predictions,
                    json_out=args.json_out, results_out=args.results_out, device=args.device, size=args.size,
                    max_size=args.max_size, score_threshold=args.score_threshold, progress=not args.no_progress,
                    backend=args.backend, optimize=not args.no_optimize, protocol=args.protocol,
                    split_by=args.split_by)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP inference server with dynamic batching and a browser page",
                       description="POST /v1/predict (an image as the body or a multipart file field) -> JSON people "
                                   "(boxes, scores, keypoints in image pixels; query options draw_threshold, draw_nms "
                                   "and score_threshold, which can only raise --score-threshold); GET /v1/model, "
                                   "/healthz, /metrics (Prometheus); GET / is a page to try photos and the webcam. "
                                   "Concurrent requests share network calls (--max-batch, --max-wait-ms) on one "
                                   "thread that owns the model. One process per device: scale out with replicas "
                                   "behind a load balancer (docs/serving.md). Needs pip install 'fcpose[serve]'.")
    add_model_options(p, "weights", "device", "backend", "score-threshold", "draw-threshold", "size", "max-size",
                      "threads", "precision")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=_bounded(int, "a port number in [0, 65535]", 0, 65535), default=8000,
                   help="TCP port (default 8000; 0 picks a free one, printed at start)")
    p.add_argument("--max-batch", type=_positive_int, default=8, help="most images per network call (default 8)")
    p.add_argument("--max-wait-ms", type=_bounded(float, "a number of milliseconds >= 0", 0.0), default=5.0,
                   help="how long the oldest waiting image waits for others to share its call (default 5)")
    p.add_argument("--max-queue", type=_positive_int, default=64,
                   help="images waiting for the model before requests are answered 503 (default 64)")
    p.add_argument("--max-upload-mb", type=_bounded(float, "a positive number of MiB", 1e-6), default=20.0,
                   help="largest request body in MiB (default 20)")
    p.add_argument("--max-pixels", type=_positive_int, default=40_000_000,
                   help="largest width x height of an uploaded image, checked before decoding (default 40,000,000)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level (default warning; info logs start-up and shutdown)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from .serve import require_server_stack

    require_server_stack()  # one line, before anything imports Starlette
    from .serve.app import ServeSettings
    from .serve.command import run_serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                             draw_threshold=args.draw_threshold)
    return run_serve(args.weights, host=args.host, port=args.port, device=args.device, backend=args.backend,
                     size=args.size, max_size=args.max_size, score_threshold=args.score_threshold,
                     threads=args.threads, precision=args.precision, settings=settings, log_level=args.log_level)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a synthetic multi-person keypoint dataset (COCO format)",
                       description="Articulated figures on the COCO 17-keypoint skeleton, 1-8 people per image, "
                                   "with occlusion and textured backgrounds: OUT/images/*.jpg + OUT/annotations.json.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num", type=_positive_int, required=True, help="number of images (with --video: of clips)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset (default 0)")
    p.add_argument("--min-people", type=_non_negative_int, default=None,
                   help="fewest people per image (default 1; 2 with --video)")
    p.add_argument("--max-people", type=_positive_int, default=None,
                   help="most people per image (default 8; 5 with --video)")
    p.add_argument("--height", type=_positive_int, default=None, help="image height (default 384; 288 with --video)")
    p.add_argument("--width", type=_positive_int, default=None, help="image width (default 512; 384 with --video)")
    p.add_argument("--video", action="store_true",
                   help="tracking clips instead: --num clips of --frames frames where the figures walk, turn, cross "
                        "and occlude each other -> OUT/videos/clip_NNN.mp4 + OUT/annotations.json (PoseTrack-style, "
                        "ground-truth track_id; default 288x384, 2-5 people)")
    p.add_argument("--frames", type=_positive_int, default=60, help="--video: frames per clip (default 60)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    from .data.synthetic import synth_main
    from .fileio import check_output_dir

    check_output_dir(args.out)

    if args.video:
        from .data.synthetic import write_clips

        path = write_clips(args.out, args.num, args.seed, num_frames=args.frames, height=args.height or 288,
                           width=args.width or 384,
                           min_people=2 if args.min_people is None else args.min_people,
                           max_people=5 if args.max_people is None else args.max_people)
        print(f"wrote {args.num} clips of {args.frames} frames to {path}")
        return 0
    return synth_main(args.out, args.num, args.seed, 1 if args.min_people is None else args.min_people,
                      8 if args.max_people is None else args.max_people, args.height, args.width)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the whole pipeline to ONNX or OpenVINO (fp32 / int8)",
                       description="Exports network, selection, NMS (in the graph, as ONNX NonMaxSuppression), the "
                                   "dynamic keypoint heads for a dynamic number of people, and keypoint decoding. "
                                   "Inputs: 'image' float32 [1,3,H,W], normalised (the config's mean/std and channel "
                                   "order) and zero-padded to multiples of 32, and 'score_threshold' float32 []. "
                                   "Outputs in network-input pixels: boxes [N,4], scores [N], keypoints [N,K,3], "
                                   "levels [N], locations [N,2]. `fcpose predict --backend onnxruntime --weights "
                                   "MODEL.onnx` does the preprocessing and rescaling around it.")
    add_model_options(p, "weights")
    p.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                   help="onnx (default), or openvino: an OpenVINO IR (MODEL.xml + MODEL.bin) of the same graph, "
                        "fp32 or with --int8 (needs pip install 'fcpose[openvino]')")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx or model.xml")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--size", default=None, metavar="HxW",
                       help="export for this padded input size only (e.g. 800x1344)")
    group.add_argument("--dynamic", action="store_true", help="any input size (default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value before export, e.g. test.max_detections=50 (repeatable)")
    q = p.add_argument_group("int8 (--format openvino)")
    q.add_argument("--int8", action="store_true",
                   help="NNCF post-training int8 quantisation of the convolutions (controller and dynamic heads "
                        "stay fp32); check the AP afterwards with `fcpose eval --backend openvino`")
    q.add_argument("--calibration", default=None, metavar="DIR_OR_ANN.json",
                   help="calibration images: a folder, or a COCO annotation file's images (use >= 100 images of "
                        "your own domain)")
    q.add_argument("--calib-images", type=_positive_int, default=300, metavar="N",
                   help="use at most N calibration images (default 300, NNCF's default subset)")
    q.add_argument("--bias-correction", default="fast", choices=["fast", "full"],
                   help="NNCF's fast bias correction (default) or the full, slower BiasCorrection")
    q.add_argument("--int8-heads", action="store_true",
                   help="also quantise the controller and dynamic-head MatMuls (not the default: see the README)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .export.command import run_export

    return run_export(args.weights, args.out, format=args.format, size=args.size, overrides=args.overrides,
                      int8=args.int8, calibration=args.calibration, calib_images=args.calib_images,
                      fast_bias_correction=args.bias_correction == "fast", int8_heads=args.int8_heads)


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert an official AdelaiDet FCPose checkpoint to an fcpose checkpoint",
                       description="Reads an official AdelaiDet FCPose .pth (R-50 or R-101, detected from its keys; "
                                   "loaded with weights_only=True, half-precision tensors upcast to float32) or a "
                                   "model-zoo name, and writes a self-describing fcpose checkpoint.")
    p.add_argument("source", help="official .pth file, or a model-zoo name (fcpose_r50_official, fcpose_r101_official)")
    p.add_argument("out", help="output fcpose checkpoint (.pt)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    from .weights.command import run_convert

    return run_convert(args.source, args.out)


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the model presets, or print one as YAML",
                       description="Without NAME: one line per preset with its description, parameter count, "
                                   "whether released weights exist (model-zoo name for --weights) and whether "
                                   "training it needs ImageNet backbone weights. With NAME: its "
                                   "full config as YAML, every default filled in (try overrides with --set).")
    p.add_argument("name", nargs="?", help="a preset name or YAML path: print its full config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set test.score_threshold=0.1")
    p.set_defaults(func=_cmd_presets)


def _cmd_presets(args) -> int:
    from .presets_command import run_presets

    return run_presets(args.name, args.overrides)


def _add_demo(sub) -> None:
    from . import demo

    p = sub.add_parser("demo", help="the offline-capable demo: a model on a bundled image, drawn",
                       description=demo.DESCRIPTION)
    demo.add_arguments(p)
    p.set_defaults(func=lambda args: demo.run_demo(args.out, args.weights))


def _parse_persons(text: str) -> list:
    out = []
    for item in text.split(","):
        item = item.strip()
        if item == "auto":
            out.append("auto")
        elif item.isdigit() and int(item) > 0:
            out.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"--persons takes positive integers or 'auto', got {item!r}")
    return out


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency vs number of people, memory, FLOPs and conv throughput",
                       description="End-to-end latency split into preprocessing, network, NMS/selection and "
                                   "dynamic heads + decoding (median/p90 over --runs after --warmup), peak memory, "
                                   "FPS, network FLOPs and achieved GFLOP/s against a conv probe run in the same "
                                   "process. An integer in --persons forces exactly that many people through the "
                                   "dynamic heads (threshold skipped; the N*20 best locations go through NMS, the N "
                                   "best survivors are kept, topped up with suppressed ones if needed), so random "
                                   "weights (the default without --weights) work; 'auto' runs the normal threshold + "
                                   "NMS. benchmarks/bench_people.py runs it for every preset and variant.")
    p.add_argument("--config", default=None,
                   help="preset name or YAML (default fcpose_r50_fpn; with --weights the checkpoint's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    add_model_options(p, "weights", "device", "size", "max-size", "precision", "compile", "no-optimize", "threads",
                      "preprocess", "score-threshold", weights_required=False)
    p.add_argument("--persons", type=_parse_persons, default=[1, 5, 10, 20, 50],
                   help="comma-separated people counts, e.g. 1,5,10,20,50 (default) or auto")
    p.add_argument("--image", default=None,
                   help="benchmark image (default: a synthetic camera-like image of the preset's aspect, "
                        "resized to exactly --size x --max-size)")
    p.add_argument("--runs", type=_positive_int, default=20, help="timed runs per entry (default 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--batch", type=_positive_int, default=1,
                   help="throughput mode: this many copies of the image per batch (reports images/s; default 1)")
    p.add_argument("--no-probe", action="store_true", help="skip the conv-throughput probe")
    p.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'preliminary, busy machine')")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full report as JSON here")
    b = p.add_argument_group("backends side by side, end to end (read, resize, network, selection, heads, decode)")
    b.add_argument("--backends", default=None, metavar="LIST",
                   help="instead: e.g. torch,onnxruntime,openvino,openvino-int8: the model (--config/--weights) in "
                        "each, exported here at the benchmark size, timed round-robin in one run; one of "
                        "onnxruntime/openvino with --weights MODEL.onnx/.xml times that exported file alone")
    b.add_argument("--calibration", default=None, metavar="DIR_OR_ANN.json",
                   help="int8 calibration images for openvino-int8 (default: random noise images)")
    b.add_argument("--calib-images", type=_positive_int, default=20,
                   help="calibration images for openvino-int8 (default 20)")
    p.add_argument("--video", default=None, metavar="FILE",
                   help="instead: end-to-end video FPS (threaded decode + network + tracking + render/encode) next "
                        "to network-only FPS on the same frames (fcpose/bench/video.py)")
    p.add_argument("--video-frames", type=_positive_int, default=20,
                   help="--video: frames (the video is looped; default 20)")
    p.add_argument("--video-rounds", type=_positive_int, default=2, help="--video: interleaved rounds (default 2)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from .bench.command import run_bench_command

    return run_bench_command(args)


def _add_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="import annotation-tool exports to COCO keypoints; check a dataset",
                       description="import: convert a Label Studio JSON export to a COCO-keypoints file. check: "
                                   "summarise a COCO-keypoints file (CVAT's COCO Keypoints 1.0 export as it comes, "
                                   "too) and list, one line each, what keeps it from training (docs/custom_data.md).")
    tools = p.add_subparsers(dest="dataset_command", required=True, metavar="ACTION", help="import or check")
    q = tools.add_parser("import", help="convert an annotation tool's export to COCO keypoints",
                         description="Keypoint labels map to the keypoint set's names; each problem (an unknown "
                                     "label, a point with no person) is one line and leaves that item out.")
    q.add_argument("export", help="the export file (Label Studio: Export -> JSON)")
    q.add_argument("--from", dest="source_format", required=True, choices=["label-studio"], help="the tool")
    q.add_argument("--out", required=True, help="the COCO-keypoints annotation file to write")
    q.add_argument("--images", default=None,
                   help="the image folder: sizes of images without labels, names without Label Studio's upload prefix")
    q.add_argument("--keypoints", default=None, metavar="SET",
                   help="the keypoint names and their order: coco (default), crowdpose, a COCO annotation .json (its "
                        "keypoint category), or a preset or YAML file (its keypoints: section, with sigmas and flip "
                        "pairs)")
    q.set_defaults(func=_cmd_dataset_import)
    c = tools.add_parser("check", help="summarise a COCO-keypoints dataset and list its problems",
                         description="Exit status 0: ready to train; 1: problems (listed one per line).")
    c.add_argument("annotations", help="COCO-keypoints annotation JSON")
    c.add_argument("--images", default=None, help="the image folder: also check every image is there, at its size")
    c.set_defaults(func=_cmd_dataset_check)


def _cmd_dataset_import(args) -> int:
    from .data.label_studio import run_dataset_import
    from .fileio import check_output_file

    check_output_file(args.out, "annotation file")
    return run_dataset_import(args.source_format, args.export, args.out, images=args.images, keypoints=args.keypoints)


def _cmd_dataset_check(args) -> int:
    from .data.check import run_dataset_check

    return run_dataset_check(args.annotations, args.images)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="fcpose", description=plain_text(__doc__.split("\n\n")[0]))
    parser.add_argument("--version", action="version", version=f"fcpose {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_predict, _add_track, _add_serve, _add_train, _add_eval, _add_bench, _add_export, _add_convert,
                _add_synth, _add_presets, _add_demo, _add_dataset):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FCPoseError as exc:
        code = getattr(exc, "exit_code", 2)  # a stop on a signal (train) is not an error: 128 + the signal
        if not getattr(exc, "quiet", False):  # training's other ranks stop alike and leave the line to rank 0
            print(f"fcpose {args.command}: {'' if code != 2 else 'error: '}{worker_message(exc)}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"fcpose {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
