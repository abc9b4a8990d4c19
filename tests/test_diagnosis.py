from lightning_lossguard.diagnosis import first_few, format_number


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
