import AVFoundation
import CoreVideo
import Foundation

/// Runs the camera, feeds frames to the pose estimator, and publishes the people found and timings.
final class CameraModel: NSObject, ObservableObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    let session = AVCaptureSession()
    @Published var people: [Pose] = []
    @Published var frameWidth = 1
    @Published var frameHeight = 1
    @Published var fps: Double = 0
    @Published var latencyMs: Double = 0
    @Published var error: String?

    private let queue = DispatchQueue(label: "pose.camera")
    private var estimator: PoseEstimator?
    private let smoother = PoseSmoother()
    private var lastFrame = CFAbsoluteTimeGetCurrent()

    override init() {
        super.init()
        do {
            estimator = try PoseEstimator()
        } catch {
            self.error = "Cannot load the model: \(error)"
        }
    }

    func start() {
        AVCaptureDevice.requestAccess(for: .video) { granted in
            guard granted else {
                DispatchQueue.main.async { self.error = "The camera permission is needed to estimate poses." }
                return
            }
            self.queue.async { self.configure() }
        }
    }

    func stop() {
        queue.async { self.session.stopRunning() }
    }

    private func configure() {
        guard session.inputs.isEmpty else {
            session.startRunning()
            return
        }
        session.beginConfiguration()
        session.sessionPreset = .high
        guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back),
              let input = try? AVCaptureDeviceInput(device: device),
              session.canAddInput(input)
        else {
            session.commitConfiguration()
            DispatchQueue.main.async { self.error = "No camera available." }
            return
        }
        session.addInput(input)
        let output = AVCaptureVideoDataOutput()
        output.alwaysDiscardsLateVideoFrames = true
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.setSampleBufferDelegate(self, queue: queue)
        if session.canAddOutput(output) {
            session.addOutput(output)
        }
        output.connection(with: .video)?.videoRotationAngle = 90
        session.commitConfiguration()
        session.startRunning()
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard let estimator, let buffer = CMSampleBufferGetImageBuffer(sampleBuffer),
              let found = try? estimator.estimate(pixelBuffer: buffer)
        else {
            return
        }
        // One person is steadied over frames; several are shown as found (nothing follows a person between frames).
        let shown = PoseModelConfig.multiPerson ? found : found.map { steady($0) }
        let now = CFAbsoluteTimeGetCurrent()
        let rate = 1.0 / max(now - lastFrame, 1e-6)
        lastFrame = now
        let width = CVPixelBufferGetWidth(buffer)
        let height = CVPixelBufferGetHeight(buffer)
        DispatchQueue.main.async {
            self.people = shown
            self.frameWidth = width
            self.frameHeight = height
            self.fps = rate
            self.latencyMs = estimator.lastLatencyMs
        }
    }

    private func steady(_ pose: Pose) -> Pose {
        let points = pose.keypoints.map { [$0.x, $0.y, $0.score] }
        let smoothed = Pose.fromPoints(smoother.smooth(points), latencyMs: pose.latencyMs)
        // positions are steadied; each keypoint's depth (a 3-D model's) is shown as found
        let keypoints = smoothed.keypoints.enumerated().map { i, k -> Keypoint in
            var shown = k
            shown.depthMm = pose.keypoints[i].depthMm
            return shown
        }
        return Pose(keypoints: keypoints, latencyMs: pose.latencyMs)
    }
}
