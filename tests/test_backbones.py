"""Image backbones by name: new heads, feature-extractor mode, clear errors."""

import pytest
import torch

from lit_modules.backbones import build_image_classifier


@pytest.mark.parametrize(
    "name,size", [("small_cnn", 32), ("resnet18", 64), ("vgg11", 64), ("mobilenet_v3_small", 64)]
)
def test_new_head_and_feature_mode(name, size):
    kwargs = {"width": 8} if name == "small_cnn" else {}
    x = torch.randn(2, 3, size, size)
    model = build_image_classifier(name, 7, **kwargs).eval()
    assert model(x).shape == (2, 7)
    features = build_image_classifier(name, 0, **kwargs).eval()
    assert features(x).shape == (2, features.num_features)


def test_inception_without_weights_has_no_aux_logits():
    model = build_image_classifier("inception_v3", 5).train()
    assert model(torch.randn(2, 3, 299, 299)).shape == (2, 5)


def test_unknown_name_and_weights_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown image backbone"):
        build_image_classifier("resnet9000", 3)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_image_classifier("small_cnn", 3, weights="DEFAULT")
    with pytest.raises(FileNotFoundError):
        build_image_classifier("resnet18", 3, weights=str(tmp_path / "missing.pth"))


def test_local_weights_file_is_loaded(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = build_image_classifier("resnet18", 4, weights=str(tmp_path / "r18.pth"))
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
