import pytest

from vptlib.data.classes import CLASSES, STUDY_CLASSES, parse_classes
from vptlib.errors import UserError


@pytest.mark.parametrize(
    "folder,expected",
    [
        ("glioma", "glioma"),
        ("glioma_tumor", "glioma"),
        ("Glioma Tumour", "glioma"),
        ("meningioma", "meningioma"),
        ("meningioma_tumor", "meningioma"),
        ("notumor", "notumor"),
        ("no_tumor", "notumor"),
        ("No Tumour", "notumor"),
        ("pituitary", "pituitary"),
        ("pituitary_tumor", "pituitary"),
    ],
)
def test_study_variants_map_to_canonical(folder, expected):
    assert STUDY_CLASSES.canonical(folder) == expected


def test_canonical_order():
    assert CLASSES == ("glioma", "meningioma", "notumor", "pituitary")


def test_unknown_folder_is_named():
    with pytest.raises(UserError, match="'Training/astrocytoma' matches no class"):
        STUDY_CLASSES.resolve("astrocytoma", "Training/astrocytoma")


def test_custom_classes_with_aliases():
    cm = parse_classes("benign=b|non-cancer,malignant")
    assert cm.names == ("benign", "malignant")
    assert cm.canonical("Non_Cancer") == "benign"
    assert cm.canonical("MALIGNANT") == "malignant"
    assert cm.canonical("glioma") is None


@pytest.mark.parametrize("spec", ["onlyone", "a,a", ",=x"])
def test_bad_class_specs(spec):
    with pytest.raises(UserError):
        parse_classes(spec)
