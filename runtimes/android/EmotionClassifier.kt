// vitedge emotion classifier on Android: preprocessing shared by the LiteRT, ExecuTorch and ONNX Runtime paths.
package ai.vitedge.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.content.Context
import android.graphics.Bitmap
import android.graphics.Color
import android.graphics.Rect
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import kotlin.math.exp
import kotlin.math.roundToInt

val CLASSES = listOf("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  // meta.json "classes"
const val SIZE = 48
const val MEAN = 0.5f  // meta.json "preprocess"
const val STD = 0.5f

/** Face box (from ML Kit) grown by 20% per side, cropped, gray, 48x48 bilinear, normalised. */
fun preprocess(photo: Bitmap, face: Rect, margin: Float = 0.2f): FloatArray {
    val dx = (face.width() * margin).toInt(); val dy = (face.height() * margin).toInt()
    val box = Rect(maxOf(0, face.left - dx), maxOf(0, face.top - dy),
                   minOf(photo.width, face.right + dx), minOf(photo.height, face.bottom + dy))
    val crop = Bitmap.createBitmap(photo, box.left, box.top, box.width(), box.height())
    val small = Bitmap.createScaledBitmap(crop, SIZE, SIZE, /* filter = bilinear */ true)
    val out = FloatArray(SIZE * SIZE)
    for (y in 0 until SIZE) for (x in 0 until SIZE) {
        val c = small.getPixel(x, y)
        val gray = 0.299f * Color.red(c) + 0.587f * Color.green(c) + 0.114f * Color.blue(c)
        out[y * SIZE + x] = (gray / 255f - MEAN) / STD
    }
    return out
}

fun softmax(logits: FloatArray): FloatArray {
    val m = logits.max(); val e = logits.map { exp(it - m) }; val s = e.sum()
    return FloatArray(logits.size) { e[it] / s }
}

/**
 * LiteRT: model.tflite (litert-fp32 or litert-int8), batch 1, XNNPACK on the CPU. The int8 artefact
 * is dynamic-range (float in, float out: nothing changes here) or full-integer (int8 in and out:
 * quantised/dequantised below with the tensors' own scale and zero point).
 */
class LiteRTEmotion(context: Context, threads: Int = 2) {
    private val interpreter = Interpreter(mapAsset(context, "model.tflite"),
                                          Interpreter.Options().apply { setNumThreads(threads); setUseXNNPACK(true) })
    private val input = interpreter.getInputTensor(0)   // [1, 1, 48, 48]: NCHW with one channel = the face row by row
    private val output = interpreter.getOutputTensor(0) // [1, 7] logits
    private val inBuf = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())
    private val outBuf = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())

    fun logits(face: FloatArray): FloatArray {
        inBuf.rewind()
        if (input.dataType() == DataType.FLOAT32) {
            face.forEach { inBuf.putFloat(it) }
        } else {  // full-integer model
            val q = input.quantizationParams()
            face.forEach { inBuf.put((it / q.scale + q.zeroPoint).roundToInt().coerceIn(-128, 127).toByte()) }
        }
        inBuf.rewind(); outBuf.rewind()
        interpreter.run(inBuf, outBuf)
        outBuf.rewind()
        val n = output.shape()[1]
        return if (output.dataType() == DataType.FLOAT32) FloatArray(n) { outBuf.float } else {
            val q = output.quantizationParams()
            FloatArray(n) { (outBuf.get() - q.zeroPoint) * q.scale }
        }
    }
}

/** ExecuTorch: model.pte (XNNPACK), batch 1. */
class ExecuTorchEmotion(context: Context) {
    private val module = Module.load(assetFile(context, "model.pte"))
    fun logits(face: FloatArray): FloatArray {
        val input = Tensor.fromBlob(face, longArrayOf(1, 1, SIZE.toLong(), SIZE.toLong()))
        return module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray
    }
}

/** ONNX Runtime Mobile: model.ort. */
class OrtEmotion(context: Context) {
    private val env = OrtEnvironment.getEnvironment()
    private val session = env.createSession(context.assets.open("model.ort").readBytes(),
                                            OrtSession.SessionOptions().apply { setIntraOpNumThreads(2) })
    fun logits(face: FloatArray): FloatArray =
        OnnxTensor.createTensor(env, FloatBuffer.wrap(face), longArrayOf(1, 1, SIZE.toLong(), SIZE.toLong())).use {
            session.run(mapOf("input" to it)).use { r -> (r[0].value as Array<FloatArray>)[0] }
        }
}

private fun mapAsset(context: Context, name: String): MappedByteBuffer =  // needs noCompress += "tflite"
    context.assets.openFd(name).use { fd ->
        FileInputStream(fd.fileDescriptor).channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
    }

private fun assetFile(context: Context, name: String): String {
    val file = File(context.filesDir, name)  // ExecuTorch maps the file: copy it out of the APK once
    if (!file.exists()) context.assets.open(name).use { i -> file.outputStream().use { o -> i.copyTo(o) } }
    return file.absolutePath
}
