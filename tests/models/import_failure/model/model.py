import a_module_that_does_not_exist  # noqa: F401


class Model:
    def predict(self, model_input):
        return None
