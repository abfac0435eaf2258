"""What a learner types into a lesson's class-name box: an empty name is refused in one short line, and a
word the toy text tower does not know names the closest words it knows (not its whole vocabulary)."""
import pytest

from fsslib.clip import ClipInputError, class_embeddings
from fsslib.clip.loading import load_clip


@pytest.fixture(scope="module")
def bundle():
    return load_clip("toy-vit")


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_class_name_is_refused(bundle, name):
    with pytest.raises(ClipInputError, match="class name is empty") as caught:
        class_embeddings(bundle, [name])
    assert len(str(caught.value)) < 200


def test_a_misspelt_word_names_the_closest_words_and_how_to_see_them_all(bundle):
    with pytest.raises(ClipInputError) as caught:
        class_embeddings(bundle, ["stripped star"])
    message = str(caught.value)
    assert "'stripped'" in message and "did you mean 'striped'" in message, message
    assert f"print(sorted(load_clip('{bundle.name}').tokenizer.vocab))" in message  # a command a user can run
    assert len(message) < 400, message  # a few words, not the ~100-word vocabulary
    assert sum(word in message for word in bundle.tokenizer.vocab if len(word) > 3) <= 6


def test_a_word_like_no_other_still_gets_a_short_message(bundle):
    with pytest.raises(ClipInputError) as caught:
        class_embeddings(bundle, ["xqzv"])
    assert "'xqzv'" in str(caught.value) and len(str(caught.value)) < 400
