class Model:
    def predict(self, model_input, request):
        return None
