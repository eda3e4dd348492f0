from alma_mcp import errors
from alma_mcp.errors import AlmaError, TemplateNotFound, all_error_classes


def test_every_error_code_is_unique_and_dotted() -> None:
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))
    assert all(code.count(".") == 1 and code == code.lower() for code in codes)


def test_every_error_class_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in all_error_classes():
        assert cls.__name__ in doc, cls.__name__
        assert cls.code in doc, cls.code


def test_text_starts_with_the_code() -> None:
    err = TemplateNotFound("no template 'x'; available: a, b", data={"name": "x"})
    assert str(err) == "[template.not_found] no template 'x'; available: a, b"
    assert err.to_payload() == {
        "code": "template.not_found",
        "message": "no template 'x'; available: a, b",
        "data": {"name": "x"},
    }
    assert isinstance(err, AlmaError)
