import pytest

from lynx.layers import default_layers, parse_layers


def test_lynx_depth_table_and_proportional_default():
    assert default_layers(28) == (9, 16, 28)
    assert default_layers(32) == (8, 16, 24, 32)
    assert default_layers(4)[-1] == 4 and len(default_layers(4)) >= 2


def test_parse_layers():
    assert parse_layers("9,16,last", 28) == (9, 16, 28)
    assert parse_layers("-1", 28) == (28,)
    with pytest.raises(ValueError, match="out of range"):
        parse_layers("29", 28)
    with pytest.raises(ValueError, match="not an integer"):
        parse_layers("mid", 28)
