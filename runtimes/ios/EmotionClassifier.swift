// Face detection (Vision) + emotion classification (the vitedge Core ML model).
// Add model.mlpackage to the target as EmotionViT.mlpackage; Xcode generates the EmotionViT class.
import CoreML
import Vision

struct FaceEmotion {
    let box: CGRect          // normalised image coordinates, origin bottom-left (Vision's convention)
    let emotion: String
    let confidence: Float
    let top3: [(String, Float)]
}

final class EmotionClassifier {
    private let model: VNCoreMLModel
    private let margin: CGFloat = 0.2   // the crop margin vitedge trains and infers with

    init() throws {
        let config = MLModelConfiguration()
        config.computeUnits = .all      // Neural Engine where available
        model = try VNCoreMLModel(for: EmotionViT(configuration: config).model)
    }

    func classify(_ image: CGImage, orientation: CGImagePropertyOrientation = .up) throws -> [FaceEmotion] {
        let faces = VNDetectFaceRectanglesRequest()
        let handler = VNImageRequestHandler(cgImage: image, orientation: orientation)
        try handler.perform([faces])
        return try (faces.results ?? []).map { face in
            // grow the box by the margin on every side, clamped to the image
            var box = face.boundingBox.insetBy(dx: -face.boundingBox.width * margin,
                                               dy: -face.boundingBox.height * margin)
            box = box.intersection(CGRect(x: 0, y: 0, width: 1, height: 1))
            let request = VNCoreMLRequest(model: model)
            request.regionOfInterest = box              // Vision crops, converts to gray 48x48, scales
            request.imageCropAndScaleOption = .scaleFill
            try handler.perform([request])
            let ranked = (request.results as? [VNClassificationObservation] ?? [])
                .sorted { $0.confidence > $1.confidence }
            guard let best = ranked.first else { throw CocoaError(.featureUnsupported) }
            return FaceEmotion(box: face.boundingBox, emotion: best.identifier, confidence: best.confidence,
                               top3: ranked.prefix(3).map { ($0.identifier, $0.confidence) })
        }
    }
}
