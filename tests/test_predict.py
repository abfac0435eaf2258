"""fsslib.predict: the same logits as evaluation on toy episodes, outputs at the query's own size, and every
bad input answered with exit 2 and one message (no traceback)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.methods import support_inputs


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory, toy_root) -> dict[str, Path]:
    """A toy test query and support of 'solid circle' (fold 0's class 1) as the user's files: the query as a
    non-square RGBA PNG, the support as a JPEG with an 8-bit mask, and broken variants."""
    folder = tmp_path_factory.mktemp("pictures")
    image = lambda name: np.asarray(Image.open(toy_root / "JPEGImages" / f"{name}.jpg").convert("RGB"))
    label = lambda name: np.asarray(Image.open(toy_root / "SegmentationClassAug" / f"{name}.png"))
    files = {"query": folder / "query.png", "support": folder / "support.jpg", "mask": folder / "mask.png",
             "mask16": folder / "mask16.png", "empty": folder / "empty.png", "small": folder / "small.png",
             "broken": folder / "broken.png"}
    query = image("toy_test_000040")[:, 8:56]  # 64 x 48
    Image.fromarray(np.dstack([query, np.full(query.shape[:2], 255, np.uint8)])).save(files["query"])
    Image.fromarray(image("toy_test_000026")).save(files["support"], quality=95)
    circle = label("toy_test_000026") == 1
    Image.fromarray(circle.astype(np.uint8)).save(files["mask"])
    Image.fromarray(circle.astype(np.uint16) * 1000).save(files["mask16"])
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(files["empty"])
    Image.fromarray(np.ones((32, 32), np.uint8)).save(files["small"])
    files["broken"].write_bytes(b"not an image")
    files.update(user_files(folder, image("toy_test_000026"), circle))
    return files


def rotated(picture: np.ndarray, path: Path) -> Path:
    """``picture`` saved as a phone saves it: the sensor's grid (turned a quarter) with EXIF orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # a viewer turns the stored grid 90 degrees clockwise
    Image.fromarray(picture).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    return path


def user_files(folder: Path, picture: np.ndarray, circle: np.ndarray) -> dict[str, Path]:
    """Files as users make them: phone photos (EXIF orientation), masks saved as JPEG or re-saved from one, a real
    object too small for the model's input size, a mask out of a wide picture (the support 64 x 48 as shown)."""
    files = {"rotated_query": rotated(picture[:, 8:56], folder / "phone_query.jpg"),
             "rotated_support": rotated(picture[:, 8:56], folder / "phone_support.jpg"),
             "shown_mask": folder / "shown_mask.png", "jpeg_mask": folder / "mask.jpg", "noisy_mask": folder / "noisy.png",
             "wide": folder / "wide.png", "tiny_object": folder / "tiny_object.png", "white": folder / "white.png"}
    Image.fromarray(circle[:, 8:56].astype(np.uint8)).save(files["shown_mask"])  # drawn on the picture as shown
    files["stored_mask"] = folder / "stored_mask.png"  # drawn on the stored grid
    Image.fromarray(np.rot90(circle[:, 8:56]).astype(np.uint8)).save(files["stored_mask"])
    box = np.zeros((64, 64), np.uint8)
    box[13:45, 19:51] = 255  # off JPEG's 8 x 8 blocks
    Image.fromarray(box).save(files["jpeg_mask"], quality=75)
    Image.fromarray(np.asarray(Image.open(files["jpeg_mask"]))).save(files["noisy_mask"])  # its noise kept in a PNG
    Image.fromarray(np.full((300, 451, 3), 128, np.uint8)).save(files["wide"])
    tiny = np.zeros((300, 451), np.uint8)
    tiny[150:153, 200:203] = 1  # a real object of 3 x 3 pixels
    Image.fromarray(tiny).save(files["tiny_object"])
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(files["white"])
    return files


@pytest.mark.parametrize("method, ckpt", [("pfenet", "zoo"), ("maskclip", None)])
def test_segment_gives_the_evaluation_s_prediction(toy_root, method, ckpt):
    """On 64 x 64 toy scenes (the model's own size, no resizing) segment() predicts what the evaluator's
    forward pass predicts for the same episodes."""
    from fsslib import predict
    from fsslib.engine import open_source

    model, cfg = predict.load(method, ["solid circle"], ckpt=ckpt, device="cpu")
    episodes = EpisodeDataset(open_source(cfg, "test"), 0, 1, 64, 6, seed=0, mode="test")
    batch = collate_episodes([episodes[i] for i in range(6)])
    with torch.no_grad():
        expected = model(batch.inputs()).argmax(1)  # (6, 64, 64)
    reads = support_inputs(method)
    for index in range(6):
        name = batch.class_names[index][0]
        parts = {"images": [[batch.support_images[index, 0, 0]]], "masks": [[batch.support_masks[index, 0, 0]]]}
        supports = predict.Supports([name], **{part: value for part, value in parts.items() if part in reads})
        prediction, probabilities = predict.segment(model, batch.query_images[index], supports)
        assert prediction.shape == (64, 64) and probabilities.shape == (2, 64, 64)
        assert (prediction == expected[index]).float().mean() > 0.999  # bilinear round trips at the same size


def test_the_command_line_writes_masks_at_the_query_s_size(scene_files, tmp_path, capsys):
    from fsslib.predict import main

    out = tmp_path / "out"
    code = main(["--method", "pfenet", "--ckpt", "zoo", "--query", str(scene_files["query"]), "--support",
                 str(scene_files["support"]), "--support-mask", str(scene_files["mask16"]), "--out", str(out)])
    assert code == 0
    mask = np.asarray(Image.open(out / "query_mask.png"))
    assert mask.shape == (64, 48) and set(np.unique(mask)) <= {0, 1} and (mask == 1).any()
    assert Image.open(out / "query_overlay.png").size[0] > 100
    assert str(out / "query_mask.png") in capsys.readouterr().out


def test_every_support_mode_a_method_reads(scene_files, tmp_path):
    from fsslib.predict import main

    query, support, mask = (str(scene_files[k]) for k in ("query", "support", "mask"))
    name = ["--class-name", "solid circle"]
    image_mask = ["--support", support, "--support-mask", mask]
    for method, extra in (("maskclip", name), ("clip-dinoiser", name), ("lfss", [*name, "--ckpt", "zoo", "--support", support]),
                          ("piclip", [*name, *image_mask, "--ckpt", "zoo"]), ("clip-dinoiser-support", ["--support", support]),
                          ("prototype", [*image_mask, "--ckpt", "zoo"]), ("qgnet", [*image_mask, "--ckpt", "zoo"])):
        assert main(["--method", method, "--query", query, "--out", str(tmp_path / method), *extra]) == 0, method
        assert (tmp_path / method / "query_mask.png").is_file()


@pytest.mark.parametrize("case, message", [
    ("missing query", "No image file"),
    ("unreadable query", "Cannot read"),
    ("mask of another size", "is (32, 32) but its image is (64, 64)"),
    ("empty support mask", "marks no object pixel"),
    ("unknown word", "does not know the word"),
    ("class name only for pfenet", "pfenet reads the supports' images + masks"),
    ("no class name for maskclip", "maskclip reads the class name"),
    ("shots the zoo lacks", "The zoo holds no piclip model"),
    ("uneven supports", "cannot be split evenly"),
    ("too many ways", "at most 5"),
    ("JPEG mask", "is a JPEG file, whose compression changes the values"),
    ("mask of JPEG noise", "distinct values between 0 and 255"),
    ("mask of the stored grid", "is (48, 64) but its image is (64, 48) (as shown"),
    ("object too small", "(9 pixel(s) within 3 x 3 of its 451 x 300) vanishes at the model's input size (64 x 64"),
    ("option out of range", "feature_dim of pfenet must be at least 1, got -5"),
    ("threshold out of its domain", "delta of clip-dinoiser must be above 0, at most 1"),
    ("checkpoint of a training-free method", "maskclip is training-free: it loads no checkpoint"),
    ("prompts that need supports", "clip-dinoiser (prompts=support) reads the supports' images"),
    ("supports a method does not read", "maskclip does not read the supports' images"),
    ("masks a method does not read", "or use --variant ground_truth_support"),
    ("repeated class name", "['solid circle'] are given more than once"),
    ("output under a file", "Cannot create the folder --out"),
    ("fold out of range", "--fold 7 is not a fold of benchmark 'toy', which has 4."),
    ("window smaller than a patch", "Option window=1 of CLIP-DINOiser is smaller than one 8-pixel patch"),
    ("supports without a class name", "pfenet reads the supports' images + masks; given: images."),
    ("names that differ in case and spacing", "['Striped Star', 'striped star'] are given more than once (names compare"),
    ("a name of punctuation", "[','] hold no letter or digit"),
    ("a 5-shot model with one support", "was trained on 5-shot episodes, and bam builds its layers for the number of "
                                        "shots"),
    ("a 1-shot model with five supports", "give 1 support image(s) per class"),
    ("a float picture holding NaN", "holds 256 NaN or infinite value(s) of 4096"),
])
def test_bad_input_exits_2_with_one_message(scene_files, tmp_path, capsys, case, message):
    from fsslib.predict import main

    files = {k: str(v) for k, v in scene_files.items()}
    image_mask = ["--support", files["support"], "--support-mask", files["mask"]]
    arguments = {
        "missing query": ["--method", "pfenet", "--ckpt", "zoo", "--query", str(tmp_path / "nope.jpg"), *image_mask],
        "unreadable query": ["--method", "pfenet", "--ckpt", "zoo", "--query", files["broken"], *image_mask],
        "mask of another size": ["--method", "pfenet", "--ckpt", "zoo", "--query", files["query"], "--support",
                                 files["support"], "--support-mask", files["small"]],
        "empty support mask": ["--method", "pfenet", "--ckpt", "zoo", "--query", files["query"], "--support",
                               files["support"], "--support-mask", files["empty"]],
        "unknown word": ["--method", "maskclip", "--query", files["query"], "--class-name", "giraffe"],
        "class name only for pfenet": ["--method", "pfenet", "--ckpt", "zoo", "--query", files["query"],
                                       "--class-name", "solid circle"],
        "no class name for maskclip": ["--method", "maskclip", "--query", files["query"], *image_mask],
        "shots the zoo lacks": ["--method", "piclip", "--ckpt", "zoo", "--query", files["query"], "--class-name",
                                "solid circle", *image_mask, *image_mask],
        "uneven supports": ["--method", "pfenet", "--ckpt", "zoo", "--query", files["query"], "--class-name", "solid circle",
                            "--class-name", "striped square", *image_mask],
        "too many ways": ["--method", "maskclip", "--query", files["query"],
                          *[part for name in ("solid circle", "striped square", "dotted star", "solid cross", "striped circle",
                                              "dotted square") for part in ("--class-name", name)]],
        **user_errors(files, tmp_path),
    }[case]
    out = [] if "--out" in arguments else ["--out", str(tmp_path / "out")]
    assert main([*arguments, *out]) == 2
    error = capsys.readouterr().err
    assert message in error and "How to fix" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()  # a run that stops leaves no empty output folder


def user_errors(files: dict[str, str], tmp_path: Path) -> dict[str, list[str]]:
    """The command lines of the bad inputs a new user gives (the issue "Your own pictures, hardened")."""
    pfenet = ["--method", "pfenet", "--ckpt", "zoo", "--query", files["query"]]
    circle = ["--class-name", "solid circle"]
    not_a_number = np.full((64, 64), 100, np.float32)
    not_a_number[:4] = np.nan
    Image.fromarray(not_a_number, mode="F").save(tmp_path / "nan.tif")  # 32-bit float pixels, as a TIFF holds them
    return {
        "JPEG mask": [*pfenet, "--support", files["support"], "--support-mask", files["jpeg_mask"]],
        "mask of JPEG noise": [*pfenet, "--support", files["support"], "--support-mask", files["noisy_mask"]],
        "mask of the stored grid": [*pfenet, "--support", files["rotated_support"], "--support-mask", files["stored_mask"]],
        "object too small": [*pfenet, "--support", files["wide"], "--support-mask", files["tiny_object"]],
        "option out of range": [*pfenet, "--support", files["support"], "--support-mask", files["mask"], "--options",
                                "feature_dim=-5"],
        "threshold out of its domain": ["--method", "clip-dinoiser", "--query", files["query"], *circle, "--options",
                                        "delta=-3"],
        "checkpoint of a training-free method": ["--method", "maskclip", "--ckpt", str(tmp_path / "missing.pt"), "--query",
                                                 files["query"], *circle],
        "prompts that need supports": ["--method", "clip-dinoiser", "--query", files["query"], *circle, "--options",
                                       "prompts=support"],
        "supports a method does not read": ["--method", "maskclip", "--query", files["query"], *circle, "--support",
                                            files["support"]],
        "masks a method does not read": ["--method", "lfss", "--ckpt", "zoo", "--query", files["query"], *circle,
                                         "--support", files["support"], "--support-mask", files["mask"]],
        "repeated class name": ["--method", "maskclip", "--query", files["query"], *circle, *circle],
        "output under a file": ["--method", "maskclip", "--query", files["query"], *circle, "--out",
                                str(Path(files["broken"]) / "out")],
        "fold out of range": [*pfenet, "--support", files["support"], "--support-mask", files["mask"], "--fold", "7"],
        "window smaller than a patch": ["--method", "clip-dinoiser", "--query", files["query"], *circle, "--options",
                                        "window=1", "--options", "stride=1"],
        "supports without a class name": [*pfenet, "--support", files["support"]],
        "names that differ in case and spacing": ["--method", "maskclip", "--query", files["query"], "--class-name",
                                                  "striped star", "--class-name", "Striped Star "],
        "a name of punctuation": ["--method", "maskclip", "--query", files["query"], "--class-name", ","],
        "a 5-shot model with one support": ["--method", "bam", "--ckpt", "zoo:5shot", "--query", files["query"],
                                            "--support", files["support"], "--support-mask", files["mask"]],
        "a float picture holding NaN": ["--method", "maskclip", "--query", str(tmp_path / "nan.tif"), *circle],
        "a 1-shot model with five supports": ["--method", "bam", "--ckpt", "zoo:1shot", "--query", files["query"],
                                              *["--support", files["support"], "--support-mask", files["mask"]] * 5],
    }


def test_image_modes_are_read_as_a_user_expects(tmp_path):
    from fsslib.predict import read_image, read_mask

    grey = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 256).save(tmp_path / "grey16.png")
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black: white once composited
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    for name in ("grey.png", "grey16.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (3, 64, 48) and torch.equal(image[0], image[2]) and 0.99 < float(image.max()) <= 1
    assert torch.equal(read_image(tmp_path / "clear.png"), torch.ones(3, 8, 8))
    mask = np.array([[0, 3, 255], [1, 0, 65535]], np.uint16)
    Image.fromarray(mask).save(tmp_path / "mask16.png")
    assert read_mask(tmp_path / "mask16.png").tolist() == [[0, 1, 255], [1, 0, 1]]


def test_the_paper_tier_segments_a_photograph_at_its_own_size(paper_models):
    """PFENet at the paper tier (random ResNet-50 weights for the test, 473 x 473 padded input): a 300 x 200
    picture comes back as a 300 x 200 mask."""
    from skimage import data

    from fsslib import predict
    from fsslib.config import make_config
    from fsslib.methods import build_method

    cfg = make_config(method="pfenet", preset="paper", backbone_weights="random", extra_classes=["cat"])
    model = build_method(cfg).eval()
    photo = torch.from_numpy(data.chelsea()[:300, :200].copy()).permute(2, 0, 1).float() / 255  # (3, 300, 200)
    mask = torch.zeros(300, 200, dtype=torch.long)
    mask[100:200, 50:150] = 1
    prediction, probabilities = predict.segment(model, photo, predict.Supports(["cat"], [[photo]], [[mask]]), cfg)
    assert cfg.image_size == 473 and prediction.shape == (300, 200) and probabilities.shape == (2, 300, 200)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(300, 200))


def test_masks_in_the_formats_users_have(tmp_path):
    """Black-and-white (0/255) masks are objects, grey + alpha reads the grey, palette indices are values."""
    from fsslib.predict import read_mask

    shape = np.zeros((4, 4), np.uint8)
    shape[1:3, 1:3] = 255
    Image.fromarray(shape).save(tmp_path / "bw.png")
    assert read_mask(tmp_path / "bw.png").tolist() == (shape == 255).astype(int).tolist()
    Image.fromarray(np.dstack([shape // 255, np.full((4, 4), 255, np.uint8)]), "LA").save(tmp_path / "la.png")
    assert read_mask(tmp_path / "la.png").tolist() == (shape == 255).astype(int).tolist()
    palette = Image.fromarray((shape // 255) * 2, "P")
    palette.putpalette([0, 0, 0, 9, 9, 9, 200, 10, 10] + [0] * 759)
    palette.save(tmp_path / "palette.png")
    assert read_mask(tmp_path / "palette.png").tolist() == (shape == 255).astype(int).tolist()



def test_a_black_and_white_mask_that_looks_inverted_is_read_and_warned_about(tmp_path):
    """White is the object: a mask whose white covers the picture and all its border was most likely drawn black
    on white. It is read as given (the rule), with a warning naming the fix; an object mask is read silently."""
    import warnings

    from fsslib.predict import read_mask

    inverted = np.full((20, 20), 255, np.uint8)
    inverted[8:12, 8:12] = 0  # a black object on white
    Image.fromarray(inverted).save(tmp_path / "inverted.png")
    with pytest.warns(UserWarning, match=r"marks 96% of the picture as the object(.|\n)*invert the mask"):
        assert read_mask(tmp_path / "inverted.png").sum() == 400 - 16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Image.fromarray(255 - inverted).save(tmp_path / "object.png")
        assert read_mask(tmp_path / "object.png").sum() == 16


def test_segment_refuses_pictures_of_the_wrong_shape_and_knows_the_benchmark_s_spellings(toy_root):
    from fsslib import predict
    from fsslib.config import make_config
    from fsslib.errors import EpisodeShapeError

    model, _ = predict.load("maskclip", ["solid circle"], device="cpu")
    with pytest.raises(EpisodeShapeError, match=r"\(64, 64, 3\), not \(3, H, W\)"):
        predict.segment(model, torch.rand(64, 64, 3), predict.Supports(["solid circle"]))
    pascal = make_config(method="maskclip", preset="paper", extra_classes=["aeroplane", "giraffe"])
    assert predict.class_ids(pascal, ["aeroplane", "airplane", "giraffe"]) == [1, 1, 21]  # VOC's and CLIP's spelling


def test_the_command_line_runs_the_paper_tier_with_the_user_s_weight_files(tmp_path, capsys):
    """PFENet at the paper tier through `python -m fsslib.predict`: ImageNet ResNet-50 weights and a trained
    checkpoint given as local files (random weights here, in the formats PSPNet's resnet50_v2.pth and fsslib.train
    have)."""
    from skimage import data

    from fabricate import deep_stem_resnet50_state

    from fsslib.blocks.frozen import frozen_digests
    from fsslib.config import make_config
    from fsslib.pretrain.saving import save_checkpoint
    from fsslib.methods import build_method
    from fsslib.predict import main

    weights = tmp_path / "resnet50_v2.pth"
    torch.save(deep_stem_resnet50_state(), weights)
    cfg = make_config(method="pfenet", preset="paper", backbone_weights=str(weights))
    model = build_method(cfg)
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"method": "pfenet", "model": model.state_dict(), "config": cfg.to_dict(),
                                 "frozen": frozen_digests(model)})
    photo = data.chelsea()[:240, :320]  # (240, 320, 3)
    Image.fromarray(photo).save(tmp_path / "cat.png")
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:200, 100:260] = 1
    Image.fromarray(mask).save(tmp_path / "cat_mask.png")
    code = main(["--method", "pfenet", "--preset", "paper", "--backbone-weights", str(weights), "--ckpt", str(checkpoint),
                 "--query", str(tmp_path / "cat.png"), "--support", str(tmp_path / "cat.png"), "--support-mask",
                 str(tmp_path / "cat_mask.png"), "--class-name", "cat", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(Image.open(tmp_path / "out" / "cat_mask.png")).shape == (240, 320)
    assert main(["--method", "pfenet", "--preset", "paper", "--ckpt", str(tmp_path / "missing.pt"), "--query",
                 str(tmp_path / "cat.png"), "--support", str(tmp_path / "cat.png"), "--support-mask",
                 str(tmp_path / "cat_mask.png"), "--backbone-weights", str(weights), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_phone_photos_are_read_and_segmented_as_a_viewer_shows_them(scene_files, tmp_path):
    """A JPEG with EXIF orientation 6 is read at its size as shown (64 x 48, stored 48 x 64): the mask comes out
    at that size, and a support mask drawn on the picture as shown fits its support."""
    from fsslib.predict import main, read_image

    shown = read_image(scene_files["support"])[:, :, 8:56]  # the same picture, stored upright
    turned = read_image(scene_files["rotated_query"])
    assert turned.shape == (3, 64, 48) and float((turned - shown).abs().mean()) < 0.03  # JPEG's loss only
    code = main(["--method", "pfenet", "--ckpt", "zoo", "--query", str(scene_files["rotated_query"]), "--support",
                 str(scene_files["rotated_support"]), "--support-mask", str(scene_files["shown_mask"]), "--out",
                 str(tmp_path)])
    assert code == 0 and np.asarray(Image.open(tmp_path / "phone_query_mask.png")).shape == (64, 48)


def test_segment_takes_the_pictures_a_user_holds_and_refuses_the_rest(scene_files):
    """PIL images (as shown), numpy arrays and tensors, uint8 or float, give one prediction; values 0..255 as
    floats, normalised pictures, other objects and supports the method does not read are refused clearly."""
    from fsslib import predict
    from fsslib.errors import CheckpointError, EpisodeShapeError, FsslibError, InvalidMaskError
    from fsslib.methods.options import OptionError

    model, _ = predict.load("pfenet", ["solid circle"], ckpt="zoo", device="cpu")
    query = predict.read_image(scene_files["query"])  # (3, 64, 48) in [0, 1]
    support, mask = predict.read_image(scene_files["support"]), predict.read_mask(scene_files["mask"])
    supports = predict.Supports(["solid circle"], [[support]], [[mask]])
    expected, _ = predict.segment(model, query, supports)
    as_uint8 = (query * 255).round().byte()
    held = [as_uint8, as_uint8.permute(1, 2, 0).numpy(), Image.fromarray(as_uint8.permute(1, 2, 0).numpy()),
            Image.open(scene_files["query"])]
    for picture in held:
        assert torch.equal(predict.segment(model, picture, supports)[0], expected), type(picture)
    user_supports = predict.Supports(["solid circle"], [[Image.open(scene_files["support"])]],
                                     [[mask.numpy().astype(np.uint8) * 255]])  # black and white, as a numpy array
    assert torch.equal(predict.segment(model, query, user_supports)[0], expected)
    for picture, message in ((query * 255, r"from 0 to 255, outside \[0, 1\] \(values 0..255 as floats"),
                             (query - 0.5, "normalised"), (query.long(), "torch.int64"), ([query], "a list, not a picture"),
                             (as_uint8.permute(1, 2, 0), r"\(64, 48, 3\), not \(3, H, W\)")):
        with pytest.raises(EpisodeShapeError, match=message):
            predict.segment(model, picture, supports)
    for masks, error, message in (([[mask.float() / 2]], InvalidMaskError, "threshold a soft mask"),
                                  ([[np.zeros((64, 64), np.uint8)]], FsslibError, "marks no object pixel"),
                                  ([], FsslibError, "reads the supports' images \\+ masks")):
        with pytest.raises(error, match=message):
            predict.segment(model, query, predict.Supports(["solid circle"], [[support]], masks))
    with pytest.raises(EpisodeShapeError, match="one string"):
        predict.segment(model, query, predict.Supports("solid circle", [[support]], [[mask]]))
    with pytest.raises(EpisodeShapeError, match="not a list per way"):
        predict.segment(model, query, predict.Supports(["solid circle"], [support], [mask]))
    with pytest.raises(EpisodeShapeError, match="more than once"):
        predict.segment(model, query, predict.Supports(["solid circle"] * 2, [[support]] * 2, [[mask]] * 2))
    with pytest.raises(FsslibError, match="does not read the supports' images"):
        predict.segment(*predict.load("maskclip", ["solid circle"], device="cpu")[:1], query,
                        predict.Supports(["solid circle"], [[support]]))
    with pytest.raises(EpisodeShapeError, match="one string"):
        predict.load("maskclip", "solid circle")
    with pytest.raises(CheckpointError, match="training-free"):
        predict.load("maskclip", ["solid circle"], ckpt="zoo", device="cpu")
    with pytest.raises(OptionError, match="at least 1"):
        predict.load("pfenet", ["solid circle"], ckpt="zoo", options={"feature_dim": -5})


def test_masks_are_label_images(scene_files, tmp_path):
    """255 alone is a black-and-white mask's object (the docs' rule); JPEG files and noise are refused."""
    from fsslib.errors import InvalidMaskError
    from fsslib.predict import read_mask

    assert read_mask(scene_files["white"]).eq(1).all()
    box = np.asarray(Image.open(scene_files["jpeg_mask"])) > 127  # the box, 0/255 again
    Image.fromarray(box).save(tmp_path / "lossless.webp", lossless=True)
    assert torch.equal(read_mask(tmp_path / "lossless.webp"), torch.from_numpy(box).long())
    Image.fromarray(box[10:20, 10:24].astype(np.uint8) * 255).save(tmp_path / "lossy.webp", quality=50)  # 10 values, 3 near 255
    Image.fromarray(np.asarray(Image.open(tmp_path / "lossy.webp"))).save(tmp_path / "lossy_as.png")
    for path, message in ((scene_files["jpeg_mask"], "is a JPEG file"), (scene_files["noisy_mask"], "distinct values"),
                          (tmp_path / "lossy.webp", "is a lossy WebP file"), (tmp_path / "lossy_as.png", "distinct values")):
        with pytest.raises(InvalidMaskError, match=f"{message}.*not a label image"):
            read_mask(path)


def test_a_harmless_input_the_method_ignores_is_warned_about(scene_files, tmp_path, capsys):
    from fsslib.predict import main

    code = main(["--method", "all-foreground", "--query", str(scene_files["query"]), "--class-name", "solid circle",
                 "--fold", "2", "--backbone-weights", "random", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 0 and "warning: --fold 2 picks which zoo model --ckpt zoo loads" in error
    assert "warning: all-foreground builds no ResNet backbone: --backbone-weights changes nothing" in error


def test_fold_picks_the_bam_family_s_base_learner_for_a_checkpoint_file(scene_files, tmp_path, capsys):
    """For BAM (and HDMNet, PI-CLIP on them) --fold also picks the frozen base learner: a fold-1 checkpoint given as a
    file loads with --fold 1, unwarned; without it the refusal names --fold 1."""
    from fsslib.paths import PACKAGE_DIR
    from fsslib.predict import main

    fold_1 = str(PACKAGE_DIR / "checkpoints" / "zoo" / "bam-fold1-1shot.pt")
    common = ["--method", "bam", "--ckpt", fold_1, "--query", str(scene_files["query"]), "--class-name", "solid circle",
              "--support", str(scene_files["support"]), "--support-mask", str(scene_files["mask"])]
    assert main([*common, "--fold", "1", "--out", str(tmp_path / "with")]) == 0
    assert "--fold 1 picks" not in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "without")]) == 2
    refusal = capsys.readouterr().err
    assert "trained on fold 1" in refusal and "pass --fold 1" in refusal


def test_the_paper_tier_without_its_weights_says_which_file_is_missing(tmp_path, monkeypatch):
    """Notebook 09's last section: building the paper tier's PFENet where no weights were fetched stops at once,
    naming the missing file and docs/paper_tier.md (no download, no model half built)."""
    from fsslib import predict
    from fsslib.errors import FsslibError

    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "no weights here"))
    with pytest.raises(FsslibError) as error:
        predict.load("pfenet", ["cat"], preset="paper", ckpt=None, device="cpu")
    assert "resnet50_v2.pth" in str(error.value) and "docs/paper_tier.md" in str(error.value)


def _write_many(out: Path, value: int, rounds: int) -> None:
    """One of two concurrent runs: the same query names written ``rounds`` times, the masks all ``value``."""
    from fsslib.predict import write_outputs

    query = torch.rand(3, 48 + 16 * value, 64)  # the runs' files differ in size, as two runs' do
    for _ in range(rounds):
        for stem in ("a", "b", "c"):
            write_outputs(out, stem, query, torch.full(query.shape[1:], value, dtype=torch.long), ["x", "y"], "run")


def test_concurrent_runs_into_one_folder_leave_whole_files(tmp_path):
    """Two processes writing the same names into one --out folder: whenever a file is read, during the runs and
    after them, it is a whole PNG (nothing after its end); at the end each mask is one run's and no temporary file
    is left."""
    import multiprocessing
    import time

    def whole(path: Path) -> bool:
        try:
            return path.read_bytes().endswith(b"IEND\xaeB`\x82")  # a PNG's last chunk, nothing after it
        except FileNotFoundError:  # not written yet
            return True

    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_write_many, args=(tmp_path, value, 1)) for value in (1, 2)]
    for run in runs:
        run.start()
    names = [tmp_path / f"{s}_{k}.png" for s in "abc" for k in ("mask", "overlay")]
    torn = []
    while any(run.is_alive() for run in runs):  # written in place, a file is read torn here (dozens of times)
        torn += [path.name for path in names if not whole(path)]
        time.sleep(0.002)
    for run in runs:
        run.join()
    assert [run.exitcode for run in runs] == [0, 0] and not torn
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(path.name for path in names)
    for path in names:
        assert whole(path)
        with Image.open(path) as image:
            image.load()
        if path.name.endswith("_mask.png"):
            mask = np.asarray(Image.open(path))
            assert len(np.unique(mask)) == 1 and mask.shape == (48 + 16 * int(mask[0, 0]), 64)  # one run's, whole


def test_segment_refuses_what_the_command_line_refuses(scene_files):
    """Through the API as on the command line: NaN or infinite pixels, a picture without pixels, supports that are
    not Supports, more shots than a shot-bound model was trained for and names that are one class are refused;
    a benchmark class named with other case and spacing is that class."""
    from fsslib import predict
    from fsslib.errors import EpisodeShapeError

    query = predict.read_image(scene_files["query"])
    support, mask = predict.read_image(scene_files["support"]), predict.read_mask(scene_files["mask"])
    supports = predict.Supports(["solid circle"], [[support]], [[mask]])
    model, _ = predict.load("bam", ["solid circle"], ckpt="zoo", device="cpu")
    not_a_number = query.clone()
    not_a_number[:, :4] = float("nan")
    for picture, message in ((not_a_number, "holds 576 NaN or infinite value"), (query * float("inf"), "NaN or infinite"),
                             (np.full((8, 8, 3), np.inf, np.float32), "NaN or infinite"),
                             (torch.zeros(3, 0, 0), r"has no pixels \(shape \(3, 0, 0\)\)")):
        with pytest.raises(EpisodeShapeError, match=message):
            predict.segment(model, picture, supports)
    with pytest.raises(EpisodeShapeError, match="Support image 1 of way 1 holds"):
        predict.segment(model, query, predict.Supports(["solid circle"], [[support * float("nan")]], [[mask]]))
    with pytest.raises(EpisodeShapeError, match="The supports are a dict, not predict.Supports"):
        predict.segment(model, query, {"class_names": ["solid circle"], "images": [[support]], "masks": [[mask]]})
    with pytest.raises(EpisodeShapeError, match="This bam model was trained on 1-shot episodes.*cannot read 2 support"):
        predict.segment(model, query, predict.Supports(["solid circle"], [[support] * 2], [[mask] * 2]))
    with pytest.raises(EpisodeShapeError, match="more than once"):
        predict.load("maskclip", ["cat", " Cat"])
    text_model, cfg = predict.load("maskclip", ["Solid  Circle "], device="cpu")
    assert cfg.extra_classes == ["Solid  Circle"] and predict.class_ids(cfg, ["Solid  Circle", "solid circle"]) == [1, 1]
    assert predict.segment(text_model, query, predict.Supports([" SOLID circle"]))[0].shape == (64, 48)
