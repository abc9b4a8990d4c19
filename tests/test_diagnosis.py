from lightning_lossguard.diagnosis import first_few, format_change, format_number, format_share


def test_first_few_names_say_how_many_more_there_are() -> None:
    assert first_few(["a", "b", "c"], 3) == "a, b, c"
    assert first_few(["a", "b", "c", "d", "e"], 3) == "a, b, c and 2 more"
    assert first_few([], 3) == ""


def test_numbers_are_formatted_for_people() -> None:
    assert [format_number(v) for v in (3.0, 0.123456, 1e-5, 2.5e6, float("nan"), float("-inf"))] == [
        "3",
        "0.1235",
        "1e-05",
        "2500000",
        "nan",
        "-inf",
    ]


def test_a_change_is_a_percentage_a_blow_up_a_factor_and_a_change_from_zero_or_below_nothing() -> None:
    assert [format_change(0.1, b) for b in (0.144, 0.055, 0.1, 0.99, 1.0, 2.4e20)] == [
        "+44%",
        "-45%",
        "+0%",
        "+890%",
        "10x",
        "2.4e+21x",
    ]
    # A percentage of 0 or of a negative loss means nothing; the caller quotes both values instead.
    assert [format_change(a, b) for a, b in ((0.0, 5.0), (-2.4, -1e20), (2.4, -3.0), (1.0, float("nan")))] == [""] * 4


def test_a_share_keeps_the_digits_a_small_one_needs() -> None:
    assert [format_share(f) for f in (0.37, 0.025, 0.0004, 3e-5, 0.0, 1.0)] == [
        "37%",
        "2.5%",
        "0.04%",
        "0.003%",
        "0%",
        "100%",
    ]
