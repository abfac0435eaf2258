"""The batched random views of the pretraining home (MoCo v2's aug-plus, DINO's multi-crop)."""
import torch
import torch.nn.functional as F

from fsslib.pretrain.views import (AUG_PLUS, DINO_GLOBAL_VIEWS, DINO_LOCAL_VIEW, gaussian_blur, random_views,
                                   resized_crops, rotate_hue, solarize)


def test_view_parts_against_their_definitions():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=generator)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 4)
    torch.testing.assert_close(resized_crops(images, whole, torch.zeros(4, dtype=torch.bool), 16), images)
    torch.testing.assert_close(resized_crops(images, whole, torch.ones(4, dtype=torch.bool), 16), images.flip(-1))
    primaries = torch.eye(3).T.reshape(1, 3, 1, 3)  # red, green, blue pixels
    torch.testing.assert_close(rotate_hue(primaries, torch.tensor([1 / 3])), primaries.roll(1, dims=1))  # r->g->b
    blurred = gaussian_blur(images, torch.tensor([0.8, 0.8, 1e-4, 0.8]))
    torch.testing.assert_close(blurred[2], images[2])  # sigma ~ 0: unchanged
    offsets = torch.arange(-3.0, 4.0)
    kernel = torch.exp(-0.5 * (offsets / 0.8) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(images[:1], [3, 3, 3, 3], mode="reflect")
    expected = F.conv2d(padded.transpose(0, 1), (kernel[:, None] * kernel[None])[None, None]).transpose(0, 1)
    torch.testing.assert_close(blurred[:1], expected)
    views = random_views(images, 12, torch.Generator().manual_seed(3), AUG_PLUS)
    again = random_views(images, 12, torch.Generator().manual_seed(3), AUG_PLUS)
    assert views.shape == (4, 3, 12, 12) and torch.equal(views, again) and 0 <= views.min() and views.max() <= 1


def test_solarize_inverts_the_bright_values_of_the_chosen_images():
    images = torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3).expand(2, 3, 1, 3)
    out = solarize(images, torch.tensor([True, False]))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.5, 0.1]))
    torch.testing.assert_close(out[1], images[1])


def test_dino_views_follow_main_dino():
    first, second = DINO_GLOBAL_VIEWS
    assert first.crop_scale == second.crop_scale == (0.4, 1.0) and DINO_LOCAL_VIEW.crop_scale == (0.05, 0.4)
    assert (first.blur_probability, second.blur_probability, DINO_LOCAL_VIEW.blur_probability) == (1.0, 0.1, 0.5)
    assert (first.solarize_probability, second.solarize_probability) == (0.0, 0.2)
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    local = random_views(images, 16, torch.Generator().manual_seed(1), DINO_LOCAL_VIEW)
    assert local.shape == (6, 3, 16, 16) and 0 <= local.min() and local.max() <= 1
